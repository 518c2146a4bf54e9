# herd_add_test(test_name SOURCES ${CMAKE_CURRENT_LIST_DIR}/x.cpp LIBS herd_...)
herd_add_test(test_sampler SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.cpp LIBS herd_coordinator)
