# Unit tests mirror the source tree (tests/unit/core/router.c tests core/router.c); end-to-end tests are the
# numbered python files in tests/e2e, run against the binary of this build and the harness's services. The tens say
# the layer: 1x the core (HTTP, config, logs, shedding), 2x the base bindings (shared store, lanes), 3x Redis and
# Redis Cluster, 4x MySQL, 5x Kafka, 6x the sale (stock, processes, buckets, resharding, the order's life), 7x the
# books (outages, vanished items, the order's life under faults), 8x admission and the handlers as a whole (specs),
# 9x what ships around the server (package, operations, docs).
file(GLOB_RECURSE SK_UNIT_TESTS RELATIVE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests/unit/*.c)
foreach(src ${SK_UNIT_TESTS})
    string(REGEX REPLACE "^tests/unit/(.*)\\.c$" "\\1" rel ${src})
    string(REPLACE "/" "_" name ${rel})
    add_executable(unit_${name} ${src})
    # a core test links the core alone: the core must build and run without any binding
    if(rel MATCHES "^core/")
        target_link_libraries(unit_${name} PRIVATE sk_core)
    else()
        target_link_libraries(unit_${name} PRIVATE sk)
    endif()
    # README.md and the shipped files, for the tests that compare them with the code (unit/bindings/all)
    target_compile_definitions(unit_${name} PRIVATE SK_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    add_test(NAME unit/${rel} COMMAND unit_${name})
    set_tests_properties(unit/${rel} PROPERTIES LABELS unit TIMEOUT 60)
endforeach()
# unit/scripts (tests/unit/scripts.c) runs the Lua unit tests of the scripts, tests/unit/scripts/**/*.lua (mirroring
# scripts/; layers.lua checks the scripts' require graph), each in a plain Lua state with package.path at scripts/
target_compile_definitions(unit_scripts PRIVATE SK_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# the project's own slot code for tests/e2e/lib.py (slot tokens, a key's slot): no second copy in Python
add_executable(sk_slot tests/tools/slot.c)
target_link_libraries(sk_slot PRIVATE sk)

find_program(PYTHON3 python3 REQUIRED)
file(GLOB SK_E2E_TESTS RELATIVE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests/e2e/[0-9]*.py)
foreach(src ${SK_E2E_TESTS})
    string(REGEX REPLACE "^tests/e2e/(.*)\\.py$" "\\1" name ${src})
    add_test(NAME e2e/${name} COMMAND ${PYTHON3} ${CMAKE_SOURCE_DIR}/${src} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(e2e/${name} PROPERTIES LABELS e2e TIMEOUT 300 ENVIRONMENT
        "SK_BUILD_DIR=${CMAKE_BINARY_DIR};LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp:print_suppressions=0;ASAN_OPTIONS=abort_on_error=0:detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endforeach()

# The sale on a Redis Cluster (issue 13): the essential cases of the sale suites again, every seckilld they start on the
# harness's 3-master cluster instead of the single redis-server (SK_E2E_REDIS=cluster, tests/e2e/lib.py; tests/run.sh
# starts the cluster). sk_cluster_e2e(FILE TEST...) registers e2e/FILE_cluster running those tests of FILE.
function(sk_cluster_e2e file)
    add_test(NAME e2e/${file}_cluster COMMAND ${PYTHON3} ${CMAKE_SOURCE_DIR}/tests/e2e/${file}.py ${ARGN}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(e2e/${file}_cluster PROPERTIES LABELS "e2e;cluster" TIMEOUT 300 ENVIRONMENT
        "SK_E2E_REDIS=cluster;SK_BUILD_DIR=${CMAKE_BINARY_DIR};LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp:print_suppressions=0;ASAN_OPTIONS=abort_on_error=0:detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endfunction()
# exact sell-out and the per-user limit under 50 parallel buys, both strategies
sk_cluster_e2e(60_sale test_sellout_watch test_sellout_eval test_limits_and_mixes_watch test_limits_and_mixes_eval)
# idempotent retries (the order id derived from the key carries the item's token), redis-scope limits (one script
# per slot)
sk_cluster_e2e(80_admission test_same_key_in_parallel_makes_one_order test_redis_scope_holds_across_two_processes)
# (e2e/62_sale_processes, two api processes and a consumer process on the cluster, keeps the plain e2e label: it is
# where a --role consumer process runs under ASan)
# a master killed during a sale on a cluster with replicas of its own (6 nodes): the per-master epoch sees the failover
# and the item is rebuilt; normal build only (the sale's Lua is the same under ASan, the binding's C is 35's)
if(TEST e2e/36_cluster_failover)
    set_tests_properties(e2e/36_cluster_failover PROPERTIES LABELS "e2e;cluster")
endif()
# stock buckets on different masters: exact sell-outs, parts taken across buckets, sold_out only when all are empty
sk_cluster_e2e(64_buckets test_sellout_over_8_buckets_watch test_sellout_over_8_buckets_eval test_parts_and_limits_eval)
# the hot item's slot moved to another master during a sale (the file itself sets SK_E2E_REDIS=cluster)
if(TEST e2e/66_cluster_reshard)
    set_tests_properties(e2e/66_cluster_reshard PROPERTIES LABELS "e2e;cluster")
endif()
# books: the consumer's claims and "created" marks per slot, tombstones, the sweeper, the audit
sk_cluster_e2e(70_books test_tombstone_skips_a_late_message_and_a_missing_key_is_persisted
               test_sweeper_releases_an_order_that_never_reached_kafka)

# the order's life (issue 22): pay, cancel and expire, the queued path, a bucketed item's parts, the second wave
sk_cluster_e2e(68_life test_pay_cancel_expire_eval test_a_queued_order_is_cancelled_and_expires
               test_a_bucketed_item_gives_every_part_back test_second_wave_sells_released_units_to_other_buyers)
# the waiting room (issue 23): the contract's refusals and a sold-out room, its keys in one slot per item
sk_cluster_e2e(69_queue test_refusals_of_the_contract test_sold_out_while_10000_wait)

# (tests/run.sh runs the "cluster" label on the normal build only: the binding's C under ASan is e2e/35_redis_cluster's)

# normal-only: tests/run.sh runs these on the normal build only. What they check is script behaviour (admission, the
# spec cases), packaging or documents; the C paths they pass through (HTTP, Redis, MySQL, Kafka, the shared store's
# buckets, crypto, the access log, config loading) run under ASan in 10_core..60_sale and the unit tests.
foreach(name e2e/85_specs e2e/80_admission e2e/90_package)
    if(TEST ${name})
        set_tests_properties(${name} PROPERTIES LABELS "e2e;normal-only")
    endif()
endforeach()

# the outage scenarios wait out real outages (tens of seconds each, minutes with SK_LONG=1 in make test-long)
if(TEST e2e/70_books)
    set_tests_properties(e2e/70_books PROPERTIES TIMEOUT 1200)
endif()
# the order's life under the same faults (MySQL down, Redis restarted empty, SIGKILL in a burst of expiries): it stops
# the services too, so it runs with the outage scenarios (tests/run.sh: OUTAGES)
if(TEST e2e/71_life_faults)
    set_tests_properties(e2e/71_life_faults PROPERTIES TIMEOUT 600)
endif()
