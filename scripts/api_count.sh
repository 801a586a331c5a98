#!/usr/bin/env bash
# Counts the public API from `cargo doc --no-deps --lib` HTML. rustdoc writes one page per
# public item at each public path where it is documented (redirect stubs, which it leaves at
# the defining private path of an inlined item, are skipped); a `pub use` of an item that is
# public elsewhere is listed as a re-export line (a second path) instead of a page.
# usage: cargo doc --no-deps --lib && scripts/api_count.sh target/doc/deepfactor
cd "$1" || exit 1
pages=$(find . -regextype posix-extended -regex '.*/(struct|enum|fn|trait|constant|type|macro)\.[^/]*\.html' -print0 | xargs -0 grep -L 'http-equiv="refresh"')
mods=$(find . -name index.html | grep -v '^./index.html$' | wc -l)
top=$(find . -mindepth 2 -maxdepth 2 -name index.html | wc -l)
echo "public modules: $mods ($top top-level, $((mods - top)) nested)"
for k in struct enum fn trait constant type; do
  echo "  $k: $(echo "$pages" | grep -c "/$k\.")"
done
echo "public items (pages): $(echo "$pages" | grep -c .)"
echo "  at the crate root: $(echo "$pages" | grep -c '^\./[^/]*$')"
echo "item names documented at two or more paths: $(echo "$pages" | xargs -n1 basename | sort | uniq -d | wc -l)"
echo "re-export lines (pub use of an item public elsewhere: a second path): $(grep -o 'id="reexport\.[^"]*"' -r . --include=index.html | wc -l)"
