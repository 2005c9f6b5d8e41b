#!/usr/bin/env python3
"""Every cwtch-proto criterion bench of two checkouts, run in turn (old,
new; then new, old), ROUNDS rounds; prints for each benchmark the best
median of each build and their ratio (BENCHMARKS.md, issue 15).

    scripts/bench-interleaved.py OLD_CHECKOUT NEW_CHECKOUT [ROUNDS]

after `cargo bench --no-run -p cwtch-proto` in both checkouts. Scratch
files go to $TMPDIR/bench-interleaved.
"""
import subprocess, re, glob, sys, json, os, tempfile
if len(sys.argv) < 3:
    sys.exit(__doc__)
ROUNDS=int(sys.argv[3]) if len(sys.argv)>3 else 3
vers={'old':os.path.join(sys.argv[1],'target/release/deps'),'new':os.path.join(sys.argv[2],'target/release/deps')}
SCRATCH=os.path.join(tempfile.gettempdir(),'bench-interleaved')
benches=['handshake','channel','detection','sync']
unit={'ps':1e-3,'ns':1,'µs':1e3,'us':1e3,'ms':1e6,'s':1e9}
res={}  # (bench,name,ver) -> list of medians ns
def binary(d,b):
    return [f for f in glob.glob(f'{d}/{b}-*') if not f.endswith('.d')][0]
for r in range(ROUNDS):
    for b in benches:
        order=['old','new'] if r%2==0 else ['new','old']
        for v in order:
            os.makedirs(os.path.join(SCRATCH,v),exist_ok=True)
            out=subprocess.run([binary(vers[v],b),'--bench','--warm-up-time','1','--measurement-time','2','--noplot'],
                cwd=os.path.join(SCRATCH,v),capture_output=True,text=True,env=dict(os.environ,CARGO_TARGET_DIR=os.path.join(SCRATCH,v,'target'))).stdout
            name=None
            for line in out.splitlines():
                m=re.match(r'^(\S.*?)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]',line)
                if m:
                    name=m.group(1)
                    val=float(m.group(4))*unit[m.group(5)]
                else:
                    m2=re.match(r'^\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]',line)
                    if m2 and name:
                        val=float(m2.group(3))*unit[m2.group(4)]
                    else:
                        if line and not line[0].isspace() and 'time:' not in line and not line.startswith(('Benchmarking','Found','Warning','  ')):
                            name=line.strip()
                        continue
                res.setdefault(f'{b}|{name}',{}).setdefault(v,[]).append(val)
            print(f'round {r} {b} {v} done',file=sys.stderr,flush=True)
            json.dump(res,open(os.path.join(SCRATCH,'res.json'),'w'),indent=1)
json.dump(res,open(os.path.join(SCRATCH,'res.json'),'w'),indent=1)
for k,d in res.items():
    if 'old' in d and 'new' in d:
        o=min(d['old']); n=min(d['new'])
        print(f'{k:70s} old {o:12.1f} ns  new {n:12.1f} ns  speed new/old {o/n:5.2f}x  (spread old {max(d["old"])/o:.2f} new {max(d["new"])/n:.2f})')
    else:
        print(k, 'only', list(d))
