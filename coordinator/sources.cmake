# owner: engine (lead).
target_sources(herd_coordinator PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/logits_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/generator.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model_session.cpp
  ${CMAKE_CURRENT_LIST_DIR}/replay.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench_runner.cpp
)
# owner: serve (continuous batching over any Pipeline).
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/scheduler.cpp)
# owner: lab (--trace: every batch as Chrome trace events).
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/trace_writer.cpp)
# owner: lab (--plan FILE: a plan from `herd plan --json` run exactly; the measured-vs-predicted report).
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/fixed_plan.cpp ${CMAKE_CURRENT_LIST_DIR}/run_report.cpp)
# owner: pipeline (RemotePipeline over cluster/ messages on transport/ links).
target_sources(herd_coordinator PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/remote_pipeline.cpp
  ${CMAKE_CURRENT_LIST_DIR}/remote_requests.cpp
  ${CMAKE_CURRENT_LIST_DIR}/worker_set.cpp
  ${CMAKE_CURRENT_LIST_DIR}/weight_server.cpp
  ${CMAKE_CURRENT_LIST_DIR}/setup_progress.cpp
)
target_link_libraries(herd_coordinator PUBLIC herd_cluster)
# owner: planner. Without --split the coordinator plans the split (coordinator/plan_adapter.h).
target_sources(herd_coordinator PRIVATE ${CMAKE_CURRENT_LIST_DIR}/plan_adapter.cpp)
target_link_libraries(herd_coordinator PUBLIC herd_partition)
