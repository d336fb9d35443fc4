# crucible_add_backend(NAME SOURCES src... [OUTPUT_DIRECTORY dir] [INSTALL_DIRECTORY dir])
#
# Builds a crucible-engine backend plugin: a shared library named
# libcrucible-backend-NAME.so that exports only its entry symbol
# (crucible_backend_api_v0) and links the SDK. Used by the in-tree plugins and
# by third parties alike (after find_package(CrucibleSDK)).
function(crucible_add_backend name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY;INSTALL_DIRECTORY" "SOURCES" ${ARGN})
  set(target crucible-backend-${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  if(TARGET Crucible::sdk)
    target_link_libraries(${target} PRIVATE Crucible::sdk)
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME crucible-backend-${name}
    CXX_VISIBILITY_PRESET hidden
    C_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
  if(ARG_INSTALL_DIRECTORY)
    install(TARGETS ${target} LIBRARY DESTINATION ${ARG_INSTALL_DIRECTORY})
  endif()
endfunction()
