# owner: lab. `herd lab` (launch/herd-lab) in pytest, against the real binary: the cluster-file
# reader, charts and a loopback run (lab_pytest, no root needed), and the namespaced runs with tc
# shaping, cgroups and teardown (lab_netns_pytest: needs root and `ip netns`; without them pytest
# skips every test with the reason, and ctest reports the test as skipped, not passed).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  foreach(t lab_pytest lab_netns_pytest)
    if(t STREQUAL lab_pytest)
      set(file tests/lab/test_lab_unit.py)
    else()
      set(file tests/lab/test_lab_netns.py)
    endif()
    add_test(NAME ${t} COMMAND ${Python3_EXECUTABLE} -m pytest -q -rs -p no:cacheprovider ${file}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${t} PROPERTIES
      ENVIRONMENT "HERD_BIN=$<TARGET_FILE:herd>;HERD_SHARED_DIR=${HERD_SHARED_DIR};PYTHONDONTWRITEBYTECODE=1"
      SKIP_REGULAR_EXPRESSION "network namespaces unavailable"
      LABELS "lab;python" TIMEOUT 900)
  endforeach()
else()
  add_test(NAME lab_pytest COMMAND ${CMAKE_COMMAND} -E echo "lab_pytest: no python3 found; install python3")
  set_tests_properties(lab_pytest PROPERTIES LABELS "lab;python" WILL_FAIL TRUE)
endif()
