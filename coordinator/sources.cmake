# owner: engine (lead).
target_sources(herd_coordinator PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/logits_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/generator.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model_session.cpp
  ${CMAKE_CURRENT_LIST_DIR}/replay.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench_runner.cpp
)
# owner: pipeline (RemotePipeline over transport/ links).
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/remote_pipeline.cpp)
target_link_libraries(herd_coordinator PUBLIC herd_transport)
# owner: planner. Without --split the coordinator plans the split (partition/strategies.h).
target_link_libraries(herd_coordinator PUBLIC herd_partition)
