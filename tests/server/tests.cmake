# owner: serve. The `herd serve` suite in Python (pytest, the openai client, requests,
# prometheus-client): it starts the real binary (and `herd worker`s) on 127.0.0.1 with --port 0.
# A missing Python package is a failure naming it (setup.sh pip-installs them).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME server_pytest
    COMMAND ${Python3_EXECUTABLE} -m pytest -q -p no:cacheprovider tests/server
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(server_pytest PROPERTIES
    ENVIRONMENT "HERD_BIN=$<TARGET_FILE:herd>;HERD_SHARED_DIR=${HERD_SHARED_DIR};PYTHONDONTWRITEBYTECODE=1"
    LABELS "server;python" TIMEOUT 600)
else()
  add_test(NAME server_pytest COMMAND ${CMAKE_COMMAND} -E echo "server_pytest: no python3 found; install python3")
  set_tests_properties(server_pytest PROPERTIES LABELS "server;python" WILL_FAIL TRUE)
endif()
