# Build helpers shared by every target: one place for the language level, warnings and tests.
set(CMAKE_CXX_STANDARD 23)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

find_package(Threads REQUIRED)
find_package(OpenSSL 3.0 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
find_package(nlohmann_json 3 REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)
find_package(Boost 1.74 REQUIRED)
if(TORWART_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# Warnings are errors for our own code.
add_library(torwart_warnings INTERFACE)
option(TORWART_WERROR "Treat warnings as errors" ON)
target_compile_options(torwart_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wnon-virtual-dtor
  $<$<BOOL:${TORWART_WERROR}>:-Werror>
  $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local -Wno-maybe-uninitialized>)

# torwart_library(NAME core SOURCES ... DEPS PUBLIC ... PRIVATE ...)
# Declares target torwart_<NAME> with include dir include/ (public) and src/ (private).
function(torwart_library)
  cmake_parse_arguments(A "" "NAME" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(torwart_${A_NAME} STATIC ${A_SOURCES})
  add_library(torwart::${A_NAME} ALIAS torwart_${A_NAME})
  target_include_directories(torwart_${A_NAME}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(torwart_${A_NAME}
    PUBLIC ${A_PUBLIC_DEPS}
    PRIVATE torwart_warnings ${A_PRIVATE_DEPS})
endfunction()

# torwart_test(NAME core_test SOURCES ... DEPS ...) — a GoogleTest binary registered with CTest.
function(torwart_test)
  cmake_parse_arguments(A "" "NAME" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT TORWART_BUILD_TESTS)
    return()
  endif()
  add_executable(${A_NAME} ${A_SOURCES})
  target_link_libraries(${A_NAME} PRIVATE torwart_warnings ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  include(GoogleTest)
  gtest_discover_tests(${A_NAME} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "unit;${A_LABELS}")
endfunction()

# torwart_executable(NAME torwartd SOURCES ... DEPS ...)
function(torwart_executable)
  cmake_parse_arguments(A "" "NAME" "SOURCES;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SOURCES})
  target_link_libraries(${A_NAME} PRIVATE torwart_warnings ${A_DEPS})
endfunction()
