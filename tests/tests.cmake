# Unit tests mirror the source tree (tests/unit/core/router.c tests core/router.c); end-to-end tests are the
# numbered python files in tests/e2e, run against the binary of this build and the harness's services.
file(GLOB_RECURSE SK_UNIT_TESTS RELATIVE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests/unit/*.c)
foreach(src ${SK_UNIT_TESTS})
    string(REGEX REPLACE "^tests/unit/(.*)\\.c$" "\\1" rel ${src})
    string(REPLACE "/" "_" name ${rel})
    add_executable(unit_${name} ${src})
    target_link_libraries(unit_${name} PRIVATE sk)
    add_test(NAME unit/${rel} COMMAND unit_${name})
    set_tests_properties(unit/${rel} PROPERTIES LABELS unit TIMEOUT 60)
endforeach()

find_program(PYTHON3 python3 REQUIRED)
file(GLOB SK_E2E_TESTS RELATIVE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests/e2e/[0-9]*.py)
foreach(src ${SK_E2E_TESTS})
    string(REGEX REPLACE "^tests/e2e/(.*)\\.py$" "\\1" name ${src})
    add_test(NAME e2e/${name} COMMAND ${PYTHON3} ${CMAKE_SOURCE_DIR}/${src} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(e2e/${name} PROPERTIES LABELS e2e TIMEOUT 300 ENVIRONMENT
        "SK_BUILD_DIR=${CMAKE_BINARY_DIR};LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp:print_suppressions=0;ASAN_OPTIONS=abort_on_error=0:detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endforeach()

# the outage scenarios wait out real outages (tens of seconds each, minutes with SK_LONG=1 in make test-long)
if(TEST e2e/70_books)
    set_tests_properties(e2e/70_books PROPERTIES TIMEOUT 1200)
endif()
