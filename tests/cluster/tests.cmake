# herd's application protocol: messages round-trip and reject malformed payloads, the worker
# profile and link measurement, the model fingerprint's hash.
herd_add_test(test_cluster_protocol UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_protocol.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_protocol_profile.cpp
  LIBS herd_cluster TIMEOUT 120)
