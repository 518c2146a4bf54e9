# owner: gguf. GGUF reader (validated header parse + mmap of tensor data) and writer.
target_sources(herd_model PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/gguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_parse.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_writer.cpp)
