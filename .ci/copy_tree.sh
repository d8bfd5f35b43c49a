# Sourced by the CI jobs that rebuild the kernels in a throwaway directory.
# copy_tree DEST [--cython-output]: the working tree as it is (tracked and untracked-but-
# not-ignored files), never the shared in-place build (its .so files are removed from the
# copy). --cython-output brings Cython's up-to-date C output along, to save translating
# it again: only for a build with the default Cython directives (cythonize goes by file
# times, not directives, so a debug build must translate afresh).
copy_tree() {
  mkdir -p "$1"
  # (--ignore-failed-read: a tracked file deleted in the working tree is not copied)
  (cd "$repo" && git ls-files -z -c -o --exclude-standard | tar --null --ignore-failed-read -T - -cf -) |
    tar -x -C "$1"
  rm -f "$1"/fastmom/_kernels/*.so
  if [ "${2:-}" = --cython-output ] && [ -d "$repo/build/cython" ]; then
    mkdir -p "$1/build" && cp -a "$repo/build/cython" "$1/build/"
  fi
}
