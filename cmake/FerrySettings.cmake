# Warnings and sanitizer flags live in one INTERFACE target every ferry target links.
add_library(ferry_settings INTERFACE)
add_library(ferry::settings ALIAS ferry_settings)
target_compile_options(ferry_settings INTERFACE
  $<BUILD_INTERFACE:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Wcast-align -Wunused -Woverloaded-virtual -Wconversion -Wsign-conversion
    -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough>)
if(FERRY_WERROR)
  target_compile_options(ferry_settings INTERFACE $<BUILD_INTERFACE:-Werror>)
endif()
# At -O3 (Release) GCC 12 reports -Wrestrict and -Wstringop-overflow inside libstdc++'s
# std::string and std::vector copies where no overlap or overflow exists (GCC bugs 105329,
# 106199; quieter in 13); with -Werror that broke Release builds. ASan checks the real thing.
target_compile_options(ferry_settings INTERFACE
  $<BUILD_INTERFACE:$<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict;-Wno-stringop-overflow>>)

if(FERRY_SANITIZE)
  set(_san "-fsanitize=${FERRY_SANITIZE}" -fno-omit-frame-pointer -fno-sanitize-recover=all)
  if(FERRY_SANITIZE MATCHES "undefined")
    # UBSan's vptr check probes memory through a pipe: with descriptors exhausted (which tests
    # do on purpose) every virtual call is reported as an invalid vptr. ASan covers the
    # use-after-free that check is after.
    list(APPEND _san -fno-sanitize=vptr)
  endif()
  add_compile_options(${_san})
  add_link_options(${_san})
  message(STATUS "ferry: building with -fsanitize=${FERRY_SANITIZE}")
endif()

if(FERRY_FUZZ)
  # Instrument all code for coverage (libFuzzer's main is linked only into fuzz targets).
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# Every library target of a layer: sources, public headers, settings, alias, export name.
function(ferry_layer name)
  cmake_parse_arguments(L "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(ferry_${name} ${L_SOURCES})
  add_library(ferry::${name} ALIAS ferry_${name})
  set_target_properties(ferry_${name} PROPERTIES EXPORT_NAME ${name} OUTPUT_NAME ferry_${name}
                                               POSITION_INDEPENDENT_CODE ON)
  target_include_directories(ferry_${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(ferry_${name} PUBLIC ${L_PUBLIC_DEPS} PRIVATE ferry::settings ${L_PRIVATE_DEPS})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
