herd_add_test(test_transport SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_protocol.cpp ${CMAKE_CURRENT_LIST_DIR}/test_links.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_lanes.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_protocol_profile.cpp
  LIBS herd_transport TIMEOUT 120)
