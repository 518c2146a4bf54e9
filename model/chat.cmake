# owner: chat.
target_sources(herd_model PRIVATE ${CMAKE_CURRENT_LIST_DIR}/chat_template.cpp ${CMAKE_CURRENT_LIST_DIR}/chat_prompt.cpp)
