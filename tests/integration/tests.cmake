herd_add_test(test_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli.cpp LIBS herd_coordinator TIMEOUT 900)
add_dependencies(test_cli herd)
