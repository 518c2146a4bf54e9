# herd's application protocol: messages round-trip and reject malformed payloads, the worker
# profile and link measurement, the model fingerprint's hash.
herd_add_test(test_cluster_protocol UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_protocol.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_protocol_profile.cpp
  LIBS herd_cluster TIMEOUT 120)
# owner: trust (item 5). Per-tensor content hashes on a copy of stories260K: the digests, the cache
# file (written once, a stage's subset, stale, damaged, read-only directory) and the Assign's bounds.
herd_add_test(test_tensor_hashes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tensor_hashes.cpp
  LIBS herd_cluster herd_model TIMEOUT 120)
# owner: trust (item 4). Files opened while silent connections hold every descriptor wait for one.
# Not UNIT (the sanitized run): with no descriptor free, the sanitizers' own runtime fails (UBSan's
# vptr check probes memory through a pipe it cannot open and reports a std::thread as an invalid
# object), so these run in the plain build only.
herd_add_test(test_file_io SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_file_io.cpp LIBS herd_cluster herd_model TIMEOUT 120)
