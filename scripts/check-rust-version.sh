#!/usr/bin/env bash
# Checks that the workspace's declared `rust-version` (root Cargo.toml,
# [workspace.package]) is exactly the highest `rust_version` among all packages of the
# locked dependency graph (`cargo metadata --locked`: every package in Cargo.lock,
# whatever its target platform). Lower means the declared minimum cannot build the
# lock; higher means it demands more than anything needs. Fails naming the package(s)
# that set the maximum.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --format-version 1 --locked | python3 -c '
import json
import sys

def parse(version):
    """A rust-version ("1.89" or "1.89.0") as a comparable triple."""
    parts = [int(part) for part in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

metadata = json.load(sys.stdin)
members = set(metadata["workspace_members"])
declared = {
    package["name"]: package.get("rust_version")
    for package in metadata["packages"]
    if package["id"] in members
}
missing = sorted(name for name, version in declared.items() if not version)
if missing:
    sys.exit(f"check-rust-version: no rust-version in workspace member(s) {missing}")
if len(set(map(parse, declared.values()))) != 1:
    sys.exit(f"check-rust-version: workspace members disagree: {declared}")
workspace = next(iter(declared.values()))

locked = [
    (parse(package["rust_version"]), package["name"], package["version"], package["rust_version"])
    for package in metadata["packages"]
    if package["id"] not in members and package.get("rust_version")
]
if not locked:
    sys.exit("check-rust-version: no locked package declares a rust_version")
highest = max(version for version, *_ in locked)
demanding = [f"{name} {version} (rust-version {declared_by})"
             for parsed, name, version, declared_by in sorted(locked)
             if parsed == highest]
who = ", ".join(demanding)
highest_text = ".".join(map(str, highest))
if parse(workspace) < highest:
    sys.exit(f"check-rust-version: workspace rust-version {workspace} is lower than "
             f"{highest_text}, which {who} needs")
if parse(workspace) > highest:
    sys.exit(f"check-rust-version: workspace rust-version {workspace} is higher than the "
             f"highest of the locked packages, {highest_text} ({who})")
print(f"rust-version {workspace}: the highest of {len(locked)} locked packages, "
      f"set by {who}")
'
