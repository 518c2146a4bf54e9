# Links, listeners, lanes and the frame codec. The traffic is herd messages (cluster/protocol.h),
# a convenient way to build payloads; nothing here depends on their meaning.
herd_add_test(test_transport UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_links.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_lanes.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_security.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_link_delay.cpp
  LIBS herd_transport herd_cluster TIMEOUT 120)
