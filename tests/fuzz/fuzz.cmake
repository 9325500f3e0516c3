# tests/fuzz: the libFuzzer targets (one .c per target, harness.c shared), built when SK_FUZZ is ON (make fuzz-build:
# the build-fuzz tree, CC=clang; the library is instrumented by CMakeLists.txt). Each target is also a ctest test that
# runs it over its seed corpus and its regressions, then mutates for a few seconds (SK_FUZZ_TEST_SECONDS); `make fuzz`
# runs each one longer (tests/fuzz/run.sh).
file(GLOB SK_FUZZ_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/*.c)
list(FILTER SK_FUZZ_SOURCES EXCLUDE REGEX "/harness\\.c$")
set(SK_FUZZ_TEST_SECONDS 5 CACHE STRING "seconds of mutation per target in the ctest run (make test)")
add_library(sk_fuzz_harness STATIC ${CMAKE_SOURCE_DIR}/tests/fuzz/harness.c)
target_link_libraries(sk_fuzz_harness PUBLIC sk)
target_compile_definitions(sk_fuzz_harness PRIVATE SK_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
foreach(src ${SK_FUZZ_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(fuzz_${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.c)
    target_link_libraries(fuzz_${name} PRIVATE sk_fuzz_harness)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    add_test(NAME fuzz/${name} COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh $<TARGET_FILE:fuzz_${name}> ${name}
                                       ${SK_FUZZ_TEST_SECONDS})
    set_tests_properties(fuzz/${name} PROPERTIES LABELS fuzz TIMEOUT 120)
endforeach()
