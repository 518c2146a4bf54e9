# herd_add_test(test_name SOURCES ${CMAKE_CURRENT_LIST_DIR}/x.cpp LIBS herd_...)
herd_add_test(test_chat_template UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_chat_template.cpp LIBS herd_model)
herd_add_test(test_gguf UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gguf.cpp ${CMAKE_CURRENT_LIST_DIR}/test_gguf_malformed.cpp LIBS herd_model)
herd_add_test(test_tokenizer UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.cpp ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer_unicode.cpp LIBS herd_model)
