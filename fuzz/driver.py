#!/usr/bin/env python3
"""Runs the libFuzzer targets built in build-fuzz/ (scripts/fuzz.sh builds them first; see
docs/fuzzing.md): per target, a replay of the committed seed corpus fuzz/corpus/<target>/
(regression inputs included), a replay of the recorded libhdf5 inputs fuzz/known/<target>/, then a
timed run that restarts after each crash or hang found inside Debian's libhdf5 until the time is
spent. Every failure is triaged from its sanitizer report: "ours" when the first frame below the
sanitizer runtime, libFuzzer and the C/C++ runtime is anywhere but libhdf5 (our code, the headers it
inlines, LibTorch, ...), "libhdf5" when it is inside libhdf5. Prints a Markdown table and the
distinct libhdf5 failures; exits 1 on any finding in our code (and on libhdf5 findings too with
--strict-libhdf5), leaving every failing input with its report under --findings.

Standard library only: python3 fuzz/driver.py --build build-fuzz --seconds 30 --jobs 1
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]
# fuzz_h5: LeakSanitizer off while fuzzing (libhdf5 leaks on its own error paths, e.g. in a failed
# H5Fopen, where we hold no handle); the harness checks instead that no HDF5 object is left open,
# and the seed replay keeps LeakSanitizer on (valid files take no libhdf5 error path).
FUZZ_EXTRA = {"h5": ["-detect_leaks=0"]}

FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (.*)$")
RUNTIME_FUNC = re.compile(
    r"^(__sanitizer|__asan|__lsan|__ubsan|__interceptor|___interceptor|__interception|fuzzer::|"
    r"__mem|__str|__GI_|__libc|__pthread_kill|"
    r"__cxa_|__gxx_|std::terminate|__gnu_cxx::__verbose_terminate_handler|__cxxabiv1|_Unwind|"
    r"operator new|operator delete|"
    r"(raise|abort|pthread_kill|gsignal|free|malloc|calloc|realloc|memcpy|memmove|memset|memcmp|"
    r"strlen|strnlen|strcpy|strncpy|_start|main)\b)")
RUNTIME_LIB = re.compile(r"/(libc\.so|libstdc\+\+|libgcc_s|ld-linux|libm\.so|libpthread)|"
                         r"^(\.\./)*(string|csu|nptl|stdlib|signal|malloc|misc|libio|sysdeps)/")  # glibc's sources


def frames_of(report):
    """(function, module or source location) of each frame of the first stack in a report."""
    out = []
    for line in report.splitlines():
        m = FRAME.match(line)
        if not m:
            if out and not line.strip():
                break
            continue
        rest = re.sub(r" \(BuildId: [0-9a-f]+\)$", "", m.group(1).strip())
        func, where = "", ""
        if rest.endswith(")") and " (" in rest or rest.startswith("("):
            i = rest.rfind("(")
            where = rest[i + 1:-1]  # module+0xoffset
            func = rest[:i].strip()
        else:
            func, _, where = rest.rpartition(" ")
        if func.startswith("in "):
            func = func[3:]
        out.append((func.strip(), where))
    return out


def is_runtime(func, where):
    """Frames of the sanitizer runtime, libFuzzer and the C/C++ runtime libraries."""
    return bool(RUNTIME_FUNC.match(func) or RUNTIME_LIB.search(where) or
                re.search(r"/fuzz_\w+(\+0x[0-9a-f]+)?$", where))


def short(func):
    """A function name without namespaces' noise and argument list."""
    func = func.replace("(anonymous namespace)::", "")
    return func.split("(")[0] or "?"


def classify(log):
    """(category, kind, signature, summary) of the failure in a libFuzzer log."""
    kind = "crash"
    if "ERROR: libFuzzer: timeout" in log:
        kind = "timeout"
    elif "out-of-memory" in log:
        kind = "oom"
    elif "LeakSanitizer: detected memory leaks" in log:
        kind = "leak"
    elif "runtime error:" in log:
        kind = "ubsan"
    elif "ERROR: AddressSanitizer" in log:
        m = re.search(r"SUMMARY: AddressSanitizer: ([\w-]+)", log) or \
            re.search(r"ERROR: AddressSanitizer: ([\w-]+)", log)
        kind = "asan " + (m.group(1) if m else "?")
    elif "terminate called after throwing" in log:
        m = re.search(r"terminate called after throwing an instance of '([^']+)'\n\s*what\(\):\s*(.*)", log)
        kind = "uncaught %s (%s)" % (m.group(1), m.group(2)[:120]) if m else "uncaught exception"
    elif "deadly signal" in log:
        kind = "deadly signal"
    start = 0
    for key in ("ERROR: libFuzzer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                "==ERROR", "deadly signal"):
        i = log.find(key)
        if i >= 0 and (start == 0 or i < start):
            start = i
    report = log[start:]
    summary = ""
    m = re.search(r"^SUMMARY: .*$", report, re.M)
    if m:
        summary = m.group(0)[:300]
    elif kind == "timeout":
        summary = "timeout (over 10 s for one input)"
    relevant = [(f, w) for f, w in frames_of(report) if not is_runtime(f, w)]
    # Leaks and whole-process out-of-memory reports are ours until shown otherwise (a leak inside
    # libhdf5 may be a handle we did not close).
    category = "ours"
    if relevant and "libhdf5" in relevant[0][1] and kind != "leak" and \
            not (kind == "oom" and "malloc(" not in log):
        category = "libhdf5"
    sig_funcs = []
    entry = ""
    for f, w in relevant:
        if "libhdf5" in w:
            if f:  # named functions only
                sig_funcs.append(short(f))
        else:
            entry = short(f)
            break
    # A crash is named by where it happened (innermost frames); a hang by the calls that led into
    # it (outermost frames: the alarm interrupts the loop anywhere).
    sig_funcs = sig_funcs[-4:] if kind == "timeout" else sig_funcs[:4]
    if category == "libhdf5":
        signature = "%s in %s (called from %s)" % (kind, " < ".join(f for f in sig_funcs if f), entry or "?")
    else:
        ours = [(f, w) for f, w in relevant if ROOT + "/lib/" in w or ROOT + "/fuzz/" in w]
        top = ours[0] if ours else relevant[0] if relevant else ("?", "?")
        signature = "%s in %s %s" % (kind, short(top[0]), os.path.basename(top[1]))
    return category, kind, signature, summary


def run(cmd, log_path, timeout):
    env = None
    if "-detect_leaks=0" in cmd:
        # libFuzzer's flag only stops its own per-input leak checks: LeakSanitizer still reports at
        # exit what the whole run leaked (libhdf5's leaks on its error paths included, e.g. in an
        # H5Dopen2 of a corrupt object header). Off for the process too, as the flag means here.
        opts = [o for o in os.environ.get("ASAN_OPTIONS", "").split(":") if o and not o.startswith("detect_leaks=")]
        env = dict(os.environ, ASAN_OPTIONS=":".join(opts + ["detect_leaks=0"]))
    with open(log_path, "w") as log:
        try:
            p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT, env=env)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = -9
            log.write("\nfuzz driver: ERROR: the fuzzer itself ran past %d s and was killed\n" % timeout)
    with open(log_path, errors="replace") as f:
        return rc, f.read()


def artifact_of(log):
    m = re.findall(r"Test unit written to (\S+)", log)
    if m:
        return m[-1]
    m = re.findall(r"^Running: (\S+)", log, re.M)  # single-input runs
    return m[-1] if m else None


class Target:
    def __init__(self, name, a):
        self.name, self.a = name, a
        self.bin = os.path.join(a.build, "fuzz", "fuzz_" + name)
        self.seeds = os.path.join(ROOT, "fuzz", "corpus", name)
        self.known_dir = os.path.join(ROOT, "fuzz", "known", name)
        self.work = os.path.join(a.work, name)
        self.out = os.path.join(a.findings, name)
        self.execs = 0
        self.corpus = "?"
        self.ours = []      # (signature, input, report)
        self.libhdf5 = []   # (signature, input, report)
        self.known = []     # (input, status)
        self.runs = 0
        self.seconds = 0.0
        self.replayed = len(os.listdir(self.seeds)) if os.path.isdir(self.seeds) else 0

    def keep(self, category, signature, log, artifact):
        d = os.path.join(self.out, category)
        os.makedirs(d, exist_ok=True)
        dst = None
        if artifact and os.path.exists(artifact):
            dst = os.path.join(d, os.path.basename(artifact))
            if os.path.abspath(artifact) != os.path.abspath(dst):
                shutil.copy(artifact, dst)
        report = (dst or os.path.join(d, "no-input-%d" % len(os.listdir(d)))) + ".log"
        with open(report, "w") as f:
            f.write(signature + "\n\n" + log)
        (self.ours if category == "ours" else self.libhdf5).append((signature, dst, report))

    def stats(self, log):
        n = re.findall(r"^stat::number_of_executed_units: *(\d+)", log, re.M)
        if n:
            self.execs += int(n[-1])
        c = re.findall(r"corp: (\d+)", log)
        if c:
            self.corpus = c[-1]

    def replay(self):
        os.makedirs(self.out, exist_ok=True)
        art = os.path.join(self.work, "replay-")
        rc, log = run([self.bin] + COMMON + ["-runs=0", "-artifact_prefix=" + art, self.seeds],
                      os.path.join(self.work, "replay.log"), 600)
        self.stats(log)
        if rc != 0:
            cat, sig, log = self.triage(log, artifact_of(log))
            self.keep("ours", "seed corpus replay failed: " + sig + " [" + cat + "]", log, artifact_of(log))
            return False
        return True

    def replay_known(self):
        if not os.path.isdir(self.known_dir):
            return
        for name in sorted(os.listdir(self.known_dir)):
            path = os.path.join(self.known_dir, name)
            if name.endswith((".md", ".txt", ".log")) or not os.path.isfile(path):
                continue
            rc, log = run([self.bin] + COMMON + FUZZ_EXTRA.get(self.name, []) + [path], os.path.join(self.work, "known-" + name + ".log"), 300)
            if rc == 0:
                self.known.append((path, "no longer fails (libhdf5 fixed? move it to fuzz/corpus)"))
                continue
            cat, sig, log = self.triage(log, path)
            if cat != "libhdf5" and sig.endswith("(does not recur with more memory)"):
                # A recorded input of libhdf5's memory growth (vlen_*_memory_growth) that passes the
                # 2048 MB limit and then completes within 8192 MB and the 3 s rerun: the growth it was
                # recorded for, whether or not the rerun is slow enough to show its stack.
                cat, sig = "libhdf5", sig.replace("(does not recur with more memory)",
                                                  "(memory grows past 2048 MB, completes with 8192 MB)")
            if cat == "libhdf5":
                self.known.append((path, "still fails inside libhdf5: " + sig))
            else:
                self.known.append((path, "FAILS IN OUR CODE: " + sig))
                self.keep("ours", "known input " + name + ": " + sig, log, path)

    def triage(self, log, artifact):
        """(category, signature, log) of a failed run."""
        cat, kind, sig, _ = classify(log)
        if kind == "oom" and "malloc(" not in log and artifact:
            cat, sig, log = self.triage_growth(artifact, sig, log)
        return cat, sig, log

    def triage_growth(self, artifact, sig, log):
        """An out-of-memory of the whole process has no stack: rerun the input with a short timeout
        and more memory, so the timeout's stack shows where the memory grows."""
        rc, again = run([self.bin, "-timeout=3", "-rss_limit_mb=8192"] + FUZZ_EXTRA.get(self.name, []) +
                        [artifact], os.path.join(self.work, "triage-%d.log" % self.runs), 300)
        if rc == 0:
            return "ours", sig + " (does not recur with more memory)", log
        cat, kind, sig2, _ = classify(again)
        sig2 = sig2.replace(kind, "oom (memory grows past 2048 MB; found by a rerun with -timeout=3)", 1)
        return cat, sig2, log + "\n\n---- rerun with -timeout=3 -rss_limit_mb=8192 ----\n" + again

    def fuzz(self, seconds):
        corpus = os.path.join(self.work, "corpus")
        os.makedirs(corpus, exist_ok=True)
        art = os.path.join(self.work, "art") + "/"
        os.makedirs(art, exist_ok=True)
        deadline = time.time() + seconds
        while True:
            left = int(deadline - time.time())
            if left <= 0 or self.runs >= 500:
                break
            self.runs += 1
            seed = ["-seed=%d" % (self.a.seed + self.runs - 1)] if self.a.seed else []
            cmd = [self.bin] + COMMON + FUZZ_EXTRA.get(self.name, []) + seed + [
                "-max_total_time=%d" % left, "-artifact_prefix=" + art, corpus, self.seeds]
            rc, log = run(cmd, os.path.join(self.work, "fuzz-%d.log" % self.runs), left + 600)
            self.stats(log)
            if rc == 0:
                break
            artifact = artifact_of(log)
            cat, sig, log = self.triage(log, artifact)
            self.keep(cat, sig, log, artifact)
            if cat == "ours":
                break  # fix it first: every later run would keep finding it

    def go(self):
        t0 = time.time()
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        if self.replay():
            self.replay_known()
            if self.a.seconds > 0 and not self.ours:
                self.fuzz(self.a.seconds)
        self.seconds = time.time() - t0
        with open(os.path.join(self.work, "result.json"), "w") as f:
            json.dump({"target": "fuzz_" + self.name, "seconds_requested": self.a.seconds,
                       "seconds": round(self.seconds), "executions": self.execs, "corpus": self.corpus,
                       "fuzzer_runs": self.runs, "seeds_replayed": self.replayed,
                       "ours": [s for s, _, _ in self.ours], "libhdf5": [s for s, _, _ in self.libhdf5],
                       "known": [st for _, st in self.known]}, f, indent=1)
        return self


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-fuzz"))
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--targets", default="mat5 sources json h5 h5_struct")
    ap.add_argument("--seed", type=int, default=0,
                    help="libFuzzer's -seed for the first fuzzing run of each target (the next runs after a "
                         "libhdf5 failure take seed+1, ...); 0 = a random seed each run")
    ap.add_argument("--strict-libhdf5", action="store_true",
                    help="also fail on crashes and hangs found inside libhdf5")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    a.work = os.path.join(a.build, "fuzz-run")
    a.findings = os.path.join(a.build, "findings")
    targets = [Target(t, a) for t in a.targets.split()]
    for t in targets:  # only the targets run now: earlier results of others stay
        shutil.rmtree(t.out, ignore_errors=True)
    for t in targets:
        if not os.access(t.bin, os.X_OK):
            sys.exit("fuzz driver: no %s (build the fuzz targets first: scripts/fuzz.sh)" % t.bin)
        if not t.replayed:
            sys.exit("fuzz driver: empty seed corpus %s" % t.seeds)
    print("fuzz: replaying fuzz/corpus/* and fuzz/known/*, then %d s per target, %d at a time, %s"
          % (a.seconds, a.jobs, "seed %d" % a.seed if a.seed else "random seeds"), flush=True)
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        list(ex.map(lambda t: t.go(), targets))

    print()
    print("| target | seeds replayed | known libhdf5 inputs | executions | exec/s | corpus | findings in our code "
          "| failures inside libhdf5 (distinct) | fuzzer runs | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        distinct = len(set(s for s, _, _ in t.libhdf5))
        rate = t.execs / t.seconds if t.seconds else 0
        print("| fuzz_%s | %d | %d | %d | %.0f | %s | %d | %d (%d) | %d | %.0f |" % (
            t.name, t.replayed, len(t.known), t.execs, rate, t.corpus, len(t.ours), len(t.libhdf5), distinct,
            t.runs, t.seconds))
    print()
    for t in targets:
        for path, status in t.known:
            print("known %s: %s" % (os.path.relpath(path, ROOT), status))
        seen = {}
        for sig, inp, rep in t.libhdf5:
            seen.setdefault(sig, []).append(inp or rep)
        for sig, inputs in seen.items():
            print("libhdf5 (fuzz_%s, %dx): %s; input %s" % (t.name, len(inputs), sig,
                                                         os.path.relpath(inputs[0], ROOT)))
        for sig, inp, rep in t.ours:
            print("FINDING (fuzz_%s): %s\n  input:  %s\n  report: %s\n  reproduce: %s %s" % (
                t.name, sig, inp and os.path.relpath(inp, ROOT), os.path.relpath(rep, ROOT),
                os.path.relpath(t.bin, ROOT), inp and os.path.relpath(inp, ROOT)))
    ours = sum(len(t.ours) for t in targets)
    hdf = sum(len(t.libhdf5) for t in targets)
    execs = sum(t.execs for t in targets)
    failed = ours > 0 or (a.strict_libhdf5 and hdf > 0)
    print()
    print("fuzz: %s: %d finding(s) in our code, %d failure(s) inside libhdf5%s, %d executions in %d targets"
          % ("FAILED" if failed else "OK", ours, hdf,
             " (--strict-libhdf5)" if a.strict_libhdf5 else " (recorded, docs/fuzzing.md)" if hdf else "",
             execs, len(targets)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
