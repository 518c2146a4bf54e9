# herd serve's C++ side: the OpenAI request parser, stop strings and the continuous-batching
# scheduler on a real model. (The HTTP suite, with the real openai client, is tests/server/*.py.)
herd_add_test(test_serve_api UNIT UNIT SOURCES server/test_openai_api.cpp LIBS herd_server)
herd_add_test(test_scheduler UNIT UNIT SOURCES server/test_scheduler.cpp LIBS herd_coordinator herd_kernels)
