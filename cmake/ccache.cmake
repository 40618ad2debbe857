# Compiler cache (docs/build.md): when Debian's ccache is on PATH and MLFD_CCACHE is ON (the
# default), every C and C++ compile goes through it, so a second clone, a second build folder or the
# fuzz build on the same machine reuses what an earlier build compiled. The cache itself is ccache's
# own (its default folder, ~/.cache/ccache, bounded by its max_size, 5 GB unless the user set
# another): every clone of the user shares it, and nothing here changes the user's ccache.conf.
#
# The settings that make it hit, passed to ccache in its environment for our compiles only:
#   base_dir    the folder holding the sources and the build folder: absolute paths below it are
#               rewritten to relative ones before hashing, so two clones in different folders hash
#               alike (the precompiled headers are named with absolute paths on the command line).
#   sloppiness  pch_defines,time_macros (required with precompiled headers, ccache's manual), and
#               include_file_mtime,include_file_ctime: a fresh clone's headers are seconds old, and
#               ccache would otherwise refuse to record results that include them.
# For debug builds (the fuzz build) -fdebug-prefix-map maps the source folder to "." so the
# working directory need not be hashed; Clang's precompiled headers are written without the
# headers' timestamps (-fno-pch-timestamp) so a PCH restored from the cache is accepted.
#
# Sets MLFD_CCACHE_PROGRAM (empty when no cache is used) and reports the choice.
option(MLFD_CCACHE "Compile through ccache when it is installed (docs/build.md)" ON)
set(MLFD_CCACHE_PROGRAM "")
if(MLFD_CCACHE AND (CMAKE_CXX_COMPILER_LAUNCHER OR CMAKE_C_COMPILER_LAUNCHER))
  message(STATUS "ccache: not used, a compiler launcher is set already (${CMAKE_CXX_COMPILER_LAUNCHER})")
elseif(MLFD_CCACHE)
  find_program(MLFD_CCACHE_FOUND ccache)
  find_program(MLFD_ENV_PROGRAM env)
  if(MLFD_CCACHE_FOUND AND MLFD_ENV_PROGRAM)
    set(MLFD_CCACHE_PROGRAM "${MLFD_CCACHE_FOUND}")
    # base_dir: the deepest folder holding both the sources and this build folder (never "/").
    set(mlfd_base "${CMAKE_SOURCE_DIR}")
    while(NOT mlfd_base STREQUAL "/")
      string(FIND "${CMAKE_BINARY_DIR}/" "${mlfd_base}/" mlfd_at)
      if(mlfd_at EQUAL 0)
        break()
      endif()
      get_filename_component(mlfd_base "${mlfd_base}" DIRECTORY)
    endwhile()
    if(mlfd_base STREQUAL "/")
      set(mlfd_base "${CMAKE_SOURCE_DIR}")  # unrelated folders: hits across clones of the sources only
    endif()
    set(mlfd_launcher "${MLFD_ENV_PROGRAM}" "CCACHE_BASEDIR=${mlfd_base}"
        "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
        "${MLFD_CCACHE_FOUND}")
    set(CMAKE_C_COMPILER_LAUNCHER ${mlfd_launcher})
    set(CMAKE_CXX_COMPILER_LAUNCHER ${mlfd_launcher})
    add_compile_options("$<$<CONFIG:Debug,RelWithDebInfo>:-fdebug-prefix-map=${mlfd_base}=.>")
    if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
      add_compile_options("SHELL:-Xclang -fno-pch-timestamp")
    endif()
    message(STATUS "ccache: ${MLFD_CCACHE_FOUND} (base_dir ${mlfd_base}; -DMLFD_CCACHE=OFF to build without)")
  else()
    message(STATUS "ccache: not found, compiling without a cache (scripts/install_deps.sh installs it)")
  endif()
else()
  message(STATUS "ccache: off (MLFD_CCACHE=OFF)")
endif()
