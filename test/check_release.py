#!/usr/bin/env python3
"""Release metadata checks: one version everywhere, META.json per PGXN spec 1.0.0.

    test/check_release.py [--shipper PATH]

The version's one source is default_version in fundrecs.control.  Checked
against it: META.json (its version and the extension's, as semantic
versions), debian/changelog, the man page's header, CHANGELOG.md, the
Makefile's install script set, and, with --shipper, fundrecs_shipper
--version.  META.json is validated against the required and typed fields of
the PGXN Meta Spec 1.0.0 (https://pgxn.org/spec/): written against the spec,
as PGXN's own validator is not packaged in Debian.
Prints each failure and "release checks: N passed, N failed"; exit 1 on any.
"""
import argparse
import json
import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd", "gfdl_1_2",
            "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit", "mozilla_1_0",
            "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay", "sun", "zlib",
            "open_source", "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "runtime", "test", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def read(path):
    with open(os.path.join(TOP, path), encoding="utf-8") as f:
        return f.read()


def semver_of(v):
    """An extension version (1.2) as the semantic version PGXN wants (1.2.0)."""
    return v if v.count(".") == 2 else v + ".0" * (2 - v.count("."))


def validate_meta(meta):
    for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
        check(key in meta, f"META.json: required field {key!r}")
    name = meta.get("name", "")
    check(isinstance(name, str) and len(name) >= 2 and not re.search(r"[\s/\\\\]", name),
          f"META.json: name {name!r} (2+ characters, no whitespace or slashes)")
    check(isinstance(meta.get("abstract"), str) and meta.get("abstract", "").strip() != "",
          "META.json: abstract is a non-empty string")
    check(SEMVER.match(str(meta.get("version", ""))) is not None,
          f"META.json: version {meta.get('version')!r} is a semantic version")
    m = meta.get("maintainer")
    check(isinstance(m, str) or (isinstance(m, list) and m and all(isinstance(x, str) for x in m)),
          "META.json: maintainer is a string or a list of strings")
    lic = meta.get("license")
    check((isinstance(lic, str) and lic in LICENSES) or
          (isinstance(lic, list) and lic and all(x in LICENSES for x in lic)) or
          (isinstance(lic, dict) and lic and all(isinstance(u, str) and u.startswith("http")
                                                 for u in lic.values())),
          f"META.json: license {lic!r} is a spec license string, list or name-to-URL map")
    ms = meta.get("meta-spec", {})
    check(isinstance(ms, dict) and ms.get("version") == "1.0.0", "META.json: meta-spec version 1.0.0")
    provides = meta.get("provides", {})
    check(isinstance(provides, dict) and provides, "META.json: provides names at least one extension")
    for ext, p in (provides.items() if isinstance(provides, dict) else []):
        check(isinstance(p, dict) and "file" in p and "version" in p,
              f"META.json: provides.{ext} has file and version")
        if isinstance(p, dict):
            check(SEMVER.match(str(p.get("version", ""))) is not None,
                  f"META.json: provides.{ext}.version is a semantic version")
            check(os.path.isfile(os.path.join(TOP, str(p.get("file", "")))),
                  f"META.json: provides.{ext}.file {p.get('file')!r} exists")
            if "docfile" in p:
                check(os.path.isfile(os.path.join(TOP, p["docfile"])),
                      f"META.json: provides.{ext}.docfile exists")
    prereqs = meta.get("prereqs", {})
    check(isinstance(prereqs, dict), "META.json: prereqs is an object")
    for phase, rels in (prereqs.items() if isinstance(prereqs, dict) else []):
        check(phase in PHASES, f"META.json: prereqs phase {phase!r}")
        for rel, reqs in (rels.items() if isinstance(rels, dict) else []):
            check(rel in RELATIONS, f"META.json: prereqs.{phase} relationship {rel!r}")
            for req, ver in (reqs.items() if isinstance(reqs, dict) else []):
                check(isinstance(ver, str) and all(re.match(r"^\s*(?:[<>=!]=?\s*)?\d+(?:\.\d+)*\s*$", part)
                                                   for part in ver.split(",")),
                      f"META.json: prereqs.{phase}.{rel}.{req} version {ver!r}")
    res = meta.get("resources", {})
    check(isinstance(res, dict) and set(res) <= {"homepage", "bugtracker", "repository"},
          "META.json: resources has only homepage, bugtracker, repository")
    if isinstance(res, dict) and "repository" in res:
        check(set(res["repository"]) <= {"url", "web", "type"}, "META.json: resources.repository fields")
    if "release_status" in meta:
        check(meta["release_status"] in ("stable", "testing", "unstable"), "META.json: release_status")
    if "tags" in meta:
        check(isinstance(meta["tags"], list) and all(isinstance(t, str) and 0 < len(t) < 256
                                                     for t in meta["tags"]), "META.json: tags")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shipper")
    args = ap.parse_args()

    control = read("fundrecs.control")
    m = re.search(r"^default_version = '([^']+)'", control, re.M)
    check(m is not None, "fundrecs.control: default_version")
    version = m.group(1) if m else "?"

    try:
        meta = json.loads(read("META.json"))
    except (OSError, ValueError) as e:
        check(False, f"META.json parses as JSON: {e}")
        meta = {}
    validate_meta(meta)
    check(meta.get("version") == semver_of(version),
          f"META.json version {meta.get('version')!r} is {semver_of(version)!r} (fundrecs.control {version})")
    ext = meta.get("provides", {}).get("fundrecs", {})
    check(ext.get("version") == semver_of(version), "META.json provides.fundrecs.version matches")

    # The upgrade chain reaches the version: an install script or upgrade to it.
    scripts = os.listdir(TOP)
    check(any(re.fullmatch(rf"fundrecs--(.+--)?{re.escape(version)}\.sql", s) for s in scripts),
          f"an install or upgrade script to {version}")

    cl = read("debian/changelog").splitlines()[0]
    m = re.match(r"^fundrecs \(([^)]+)\)", cl)
    check(m is not None and m.group(1) == version, f"debian/changelog's version ({cl}) is {version}")

    th = next((l for l in read("doc/fundrecs_shipper.1").splitlines() if l.startswith(".TH")), "")
    check(f'"fundrecs {version}"' in th, f"man page header names fundrecs {version}: {th}")

    th7 = next((l for l in read("doc/fundrecs_decoder.7").splitlines() if l.startswith(".TH")), "")
    check(f'"fundrecs {version}"' in th7, f"fundrecs_decoder(7) header names fundrecs {version}: {th7}")

    # fundrecs_decoder(7) and the README document exactly the plugin's options.
    m = re.search(r'#define\s+FR_VALID_OPTIONS\s*\\?\s*((?:"[^"]*"\s*\\?\s*)+)', read("fundrecs_options.c"))
    check(m is not None, "FR_VALID_OPTIONS in the plugin's sources")
    valid = set(x.strip() for x in "".join(re.findall(r'"([^"]*)"', m.group(1))).split(",")) if m else set()
    check(len(valid) >= 10, f"the plugin's options found: {sorted(valid)}")
    page = read("doc/fundrecs_decoder.7")
    section = page[page.index(".SH OPTIONS"):page.index(".SH", page.index(".SH OPTIONS") + 3)]
    man = set(re.findall(r"^\.TP\n\.BR? ([a-z_]+)", section, re.M))
    check(man == valid, f"fundrecs_decoder(7) documents exactly the plugin's options: {sorted(man ^ valid)}")
    readme = read("README.md")
    table = readme[readme.index("### Output plugin options"):readme.index("### Output fields")]
    in_readme = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    check(in_readme == valid, f"README's plugin option table matches the plugin: {sorted(in_readme ^ valid)}")

    check(re.search(rf"^## \[?{re.escape(version)}\]?", read("CHANGELOG.md"), re.M) is not None,
          f"CHANGELOG.md has a section for {version}")

    if args.shipper:
        out = subprocess.run([args.shipper, "--version"], capture_output=True, text=True).stdout.strip()
        check(out == f"fundrecs_shipper (fundrecs) {version}", f"fundrecs_shipper --version: {out!r}")

    print(f"release checks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
