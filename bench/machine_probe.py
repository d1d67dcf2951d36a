"""What two busy cores of this machine cost each other: a C probe run alone and as two processes at once.

``python -m bench.machine_probe [--repeats N]`` compiles a small C program with the system
``cc`` (in a temporary folder) and times three kinds of work, each in one process and then
in two processes started together:

- **alu**: independent multiply-adds in registers (is each core really its own?);
- **stream**: a sequential sum over 256 MiB with eight independent accumulators (memory
  bandwidth: the loop waits on memory, not on one chain of additions);
- **chase S**: a pointer chase over a working set of S MiB in random order (one dependent
  load after another) on 2 MiB pages where the kernel allows (so TLB misses do not
  masquerade as cache misses): latency of the cache level the set fits in, so the sizes
  at which it jumps show the last-level cache this VM really gets, and the pair shows
  whether two cores share it. The program checks the chase is one cycle through every line.

Each process says when its untimed setup is done and waits; the parent then releases all
copies at once, so two copies time the same moments.

The DFS candidates benchmark finds the same shards up to 16% slower side by side than
alone (and the figure is noisy); this probe is the machine-level reason it can point to
(``docs/architecture.md``). It is not part of ``python -m bench``: it characterises the
machine, not the project.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
/* Setup is not timed: say so, then wait for the parent's go, so two copies time the same moments. */
static void ready(void){char line[8]; printf("ready\n"); fflush(stdout); if(!fgets(line,sizeof line,stdin)) exit(4);}
int main(int argc,char**argv){
  if(argc<4) return 2;
  const char*mode=argv[1]; size_t bytes=strtoull(argv[2],0,10); long reps=atol(argv[3]);
  if(!strcmp(mode,"stream")){
    /* eight independent sums: the loop waits on memory, not on one chain of additions */
    size_t n=bytes/64*8; double*a=malloc(n*8); if(!a) return 3; for(size_t i=0;i<n;i++)a[i]=(double)(i&1023);
    double s[8]={0}; ready(); double t0=now();
    for(long r=0;r<reps;r++)for(size_t i=0;i<n;i+=8)for(int k=0;k<8;k++)s[k]+=a[i+k];
    double t=now()-t0,tot=0; for(int k=0;k<8;k++)tot+=s[k];
    printf("%.4f %g\n",t/((double)n*reps)*1e9,tot);
  }else if(!strcmp(mode,"chase")){
    size_t n=bytes/64; size_t*idx=malloc(n*sizeof(size_t)); if(!idx||n<2) return 3; for(size_t i=0;i<n;i++)idx[i]=i;
    srand(1); for(size_t i=n-1;i>0;i--){size_t j=(size_t)rand()%(i+1),t=idx[i];idx[i]=idx[j];idx[j]=t;}
    char*buf=aligned_alloc(1<<21,(n*64+(1<<21)-1)/(1<<21)*(1<<21)); if(!buf) return 3;
    madvise(buf,n*64,MADV_HUGEPAGE); /* 2 MiB pages where the kernel allows: the TLB's reach is not what is timed */
    for(size_t i=0;i<n;i++)*(size_t*)(buf+idx[i]*64)=idx[(i+1)%n]*64;
    size_t p=idx[0]*64; for(size_t k=0;k<n;k++)p=*(size_t*)(buf+p);
    if(p!=idx[0]*64) return 5; /* one cycle through every line, or the probe is wrong */
    long steps=reps*1000000; ready(); double t0=now();
    for(long k=0;k<steps;k++)p=*(size_t*)(buf+p);
    printf("%.4f %zu\n",(now()-t0)/steps*1e9,p);
  }else{
    uint64_t a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8; long steps=reps*1000000; ready(); double t0=now();
    for(long k=0;k<steps;k++){a=a*3+b;b=b*5+c;c=c*7+d;d=d*9+e;e=e*11+f;f=f*13+g;g=g*15+h;h=h*17+a;}
    printf("%.4f %lu\n",(now()-t0)/steps*1e9,(unsigned long)(a+b+c+d+e+f+g+h));
  }
  return 0;
}
"""

MIB = 1 << 20
# (label, mode, bytes, repetitions): each run takes roughly 0.3-1 s on a current x86 core
WORK = [("alu", "alu", 0, 300), ("stream 256 MiB", "stream", 256 * MIB, 8)] + [
    (f"chase {s} MiB", "chase", s * MIB, r) for s, r in ((0.5, 100), (4, 50), (8, 40), (12, 30), (16, 10), (64, 5))]


def build(folder: Path) -> Path:
    """Compile the probe with the system C compiler; its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("machine_probe needs a C compiler (cc or gcc) on the PATH")
    src, exe = folder / "probe.c", folder / "probe"
    src.write_text(SOURCE)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def timed(exe: Path, mode: str, size: int, reps: int, copies: int) -> list[float]:
    """Nanoseconds per step of `copies` processes of the probe, their timed loops released together."""
    procs = [subprocess.Popen([str(exe), mode, str(int(size)), str(reps)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    try:
        for p in procs:  # every copy has finished its untimed setup
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"probe {mode} {size}: exit {p.wait()} before its timed loop")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            text, _ = p.communicate()
            if p.returncode != 0 or not text.split():
                raise RuntimeError(f"probe {mode} {size}: exit {p.returncode}, printed {text!r}")
            out.append(float(text.split()[0]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def main(argv: list[str] | None = None) -> None:
    """Print ns per step alone and two at once for each kind of work, and the slow-down."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="alone/pair measurements per kind of work (all shown)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        print(f"{'work':<16} {'alone ns/step':>22} {'two at once ns/step':>30} {'slow-down':>16}")
        for label, mode, size, reps in WORK:
            alone, pair = [], []
            for _ in range(args.repeats):
                alone += timed(exe, mode, size, reps, 1)
                pair.append(max(timed(exe, mode, size, reps, 2)))  # the slower of the two sets the pace
            slow = [p / a - 1 for a, p in zip(alone, pair)]
            print(f"{label:<16} {' '.join(f'{x:6.2f}' for x in alone):>22} {' '.join(f'{x:6.2f}' for x in pair):>30} "
                  f"{' '.join(f'{x:+4.0%}' for x in slow):>16}", flush=True)


if __name__ == "__main__":
    main()
