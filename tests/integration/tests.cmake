herd_add_test(test_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli.cpp LIBS herd_coordinator TIMEOUT 900)
add_dependencies(test_cli herd)
# owner: pipeline. Real `herd worker` processes on 127.0.0.1, and the same paths over inproc links.
herd_add_test(test_cluster SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cluster.cpp
  LIBS herd_coordinator herd_worker herd_cluster herd_test_tiny_models TIMEOUT 600)
add_dependencies(test_cluster herd)
herd_add_test(test_cluster_inproc UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cluster_inproc.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 600)
herd_add_test(test_synth SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_synth.cpp LIBS herd_model herd_coordinator TIMEOUT 600)
add_dependencies(test_synth herd)
# owner: pipeline (mpirun launch, cluster-file launcher). test_mpi skips when mpirun or MPI is missing.
herd_add_test(test_mpi SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_mpi.cpp TIMEOUT 600)
add_dependencies(test_mpi herd)
herd_add_test(test_launch_script SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_launch_script.cpp
  LIBS herd_coordinator TIMEOUT 600)
add_dependencies(test_launch_script herd)
herd_add_test(test_cluster_rss SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cluster_rss.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_cluster_rss herd)
# owner: cli. `herd chat` processes: the answer cap, /help and /reset, Ctrl-C.
herd_add_test(test_chat SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_chat.cpp LIBS herd_coordinator TIMEOUT 600)
add_dependencies(test_chat herd)
# owner: cli. What a cluster's start shows: coordinator weight progress + summary, worker lines.
herd_add_test(test_setup_progress SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_setup_progress.cpp
  LIBS herd_coordinator TIMEOUT 300)
add_dependencies(test_setup_progress herd)
# owner: lab. --trace: Chrome trace events from the real binary, in process and over real workers.
find_package(nlohmann_json 3.10 REQUIRED)
herd_add_test(test_trace SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_trace.cpp LIBS herd_coordinator nlohmann_json::nlohmann_json TIMEOUT 300)
add_dependencies(test_trace herd)
# owner: trust. Authentication, lane integrity and --insecure against real workers.
herd_add_test(test_security SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_security.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_host_keys.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_security herd)
# owner: trust (item 4). Bounds before allocation against real workers: huge frames, unread Pongs,
# unanswered weight requests, n_ctx/Forward caps, --cache-max, --models-dir.
herd_add_test(test_bounds SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_bounds.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_idle_connections.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_bounds herd)
# owner: trust. Authorisation by role (owner, upstream, busy, --take-over) against real workers.
herd_add_test(test_roles SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_roles.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_roles herd)
# owner: trust (item 5). Weight integrity against real workers: a copy with one tensor byte flipped
# is refused naming the tensor; the hash cache (written once, stale, garbage); a tampered weight
# cache is re-fetched; a received tensor that differs from its digest is refused and not cached.
herd_add_test(test_weight_integrity SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_weight_integrity.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_weight_integrity herd)
# owner: tensor. --workers ... --tp N: TP groups of real worker processes (and TP x PP), bit-identical to
# the in-process TpPipeline; a rank killed or stopped mid-token is named within 2 s.
herd_add_test(test_cluster_tp SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cluster_tp.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 600)
add_dependencies(test_cluster_tp herd)
herd_add_test(test_cli_tp SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_tp.cpp LIBS herd_coordinator TIMEOUT 300)
add_dependencies(test_cli_tp herd)
# owner: trust. Recovery ([trust] item 6): --step-timeout names a stopped or stuck worker;
# --on-worker-loss replan|wait|fail against real workers killed mid-generation.
herd_add_test(test_recovery SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_recovery.cpp
  LIBS herd_coordinator herd_worker herd_cluster TIMEOUT 300)
add_dependencies(test_recovery herd)
# owner: lab. Plan to run: `herd plan --json` fed back with --plan over real workers (and herd-cluster),
# the report of measured against predicted times, mismatched plans refused.
herd_add_test(test_plan_run SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_plan_run.cpp LIBS herd_coordinator nlohmann_json::nlohmann_json TIMEOUT 600)
add_dependencies(test_plan_run herd)
# owner: offload. A worker over its --mem-budget streams its repacked weights from disk: bit-identical
# logits, peak RSS within the budget, under a real memory cgroup (skipped where none is writable),
# the packed file reused and rebuilt when damaged, --no-stream's error.
herd_add_test(test_offload SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_offload.cpp
  LIBS herd_coordinator herd_worker herd_cluster herd_model TIMEOUT 600)
add_dependencies(test_offload herd)
# owner: offload. A streaming worker keeps the leading layers that fit resident (worker/stream_plan.h):
# the rule, bit-identical logits, and exactly the non-resident bytes read per pass, in process.
herd_add_test(test_resident_prefix UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_resident_prefix.cpp
  LIBS herd_worker herd_engine herd_model herd_kernels)
# --device: parsing, and the errors a device this build or host cannot run gives at startup.
herd_add_test(test_cli_device SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_device.cpp LIBS herd_coordinator herd_kernels TIMEOUT 120)
add_dependencies(test_cli_device herd)
# A worker on a device backend (the stand-in of tests/engine/guarded_device.h) beside a CPU worker.
herd_add_test(test_device_worker UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_device_worker.cpp
  LIBS herd_coordinator herd_worker herd_engine herd_model herd_kernels TIMEOUT 120)
herd_add_test(test_device_hop UNIT SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_device_hop.cpp
  LIBS herd_coordinator herd_worker herd_engine herd_model herd_kernels TIMEOUT 120)
