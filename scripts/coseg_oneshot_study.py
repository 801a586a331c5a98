"""One-shot selection rules evaluated offline over `coseg_lab oneshot-study` CSV output.

Usage: coseg_lab oneshot-study DATASET --layer head > head.csv
       python scripts/coseg_oneshot_study.py head.csv
For every class and every choice of annotated image (all in turn, then the first), a rule
picks one candidate by its IoU on the annotated image (refined `j` or coarse `cj`),
switching away from the unsupervised default only when it wins by more than δ; it is scored
on the other images. Prints mean CorLoc / Jaccard for the development half (even-indexed
classes), the held-out half and all classes, and the per-class oracle.
"""
import csv, sys, collections, itertools
import numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
classes = []
data = collections.defaultdict(dict)  # class -> cand -> arrays
meta = {}
for r in rows:
    c = r['class']
    if c not in classes: classes.append(c)
    d = data[c].setdefault(r['cand'], {'j': [], 'corloc': [], 'p': [], 'cj': []})
    d['j'].append(float(r['j'])); d['corloc'].append(float(r['corloc'])); d['p'].append(float(r['precision'])); d['cj'].append(float(r['coarse_j']))
    meta[(c, r['cand'])] = (int(r['k']), r['rule'], int(r['n']), r['factors'])
for c in classes:
    for k, d in data[c].items():
        for f in d: d[f] = np.array(d[f])
def default(c):
    return [x for x in data[c] if meta[(c, x)][0] == 8 and meta[(c, x)][1] == 'auto'][0]

def evaluate(rule, annot='all'):
    """rule(c, a) -> cand. Returns per class (J, CorLoc) averaged over annotated images a."""
    out = []
    for c in classes:
        n = len(data[c][default(c)]['j'])
        As = range(n) if annot == 'all' else [0]
        js, cs = [], []
        for a in As:
            x = rule(c, a)
            m = np.ones(n, bool); m[a] = False
            js.append(data[c][x]['j'][m].mean()); cs.append(data[c][x]['corloc'][m].mean())
        out.append((100 * np.mean(cs), 100 * np.mean(js)))
    return out
def summary(name, per):
    per = np.array(per)
    dev = per[0::2].mean(0); held = per[1::2].mean(0); al = per.mean(0)
    print(f"{name:40s} dev {dev[0]:5.1f}/{dev[1]:5.1f}  held {held[0]:5.1f}/{held[1]:5.1f}  all {al[0]:5.1f}/{al[1]:5.1f}")
    return per

def make_rule(filt, key='j', delta=0.0):
    def rule(c, a):
        D = default(c)
        cands = [x for x in data[c] if filt(c, x)]
        best = max(cands, key=lambda x: (data[c][x][key][a], x == D))
        if data[c][best][key][a] - data[c][D][key][a] > delta:
            return best
        return D
    return rule
fams = {
  'all': lambda c, x: True,
  'auto@K': lambda c, x: meta[(c, x)][1] == 'auto',
  'prefix@K8': lambda c, x: meta[(c, x)][0] == 8 and meta[(c, x)][1] in ('auto', 'prefix'),
  'prefix@all': lambda c, x: meta[(c, x)][1] in ('auto', 'prefix'),
  'auto+tau': lambda c, x: meta[(c, x)][1] in ('auto', 'autotau') and meta[(c,x)][0] == 8,
}
for annot in ['all', 'first']:
    print('== annotated:', annot)
    summary('unsupervised default', evaluate(lambda c, a: default(c), annot))
    for fname, f in fams.items():
        for key in ['j', 'cj']:
            for delta in [0.0, 0.05, 0.1, 0.2]:
                summary(f"{fname} {key} d={delta}", evaluate(make_rule(f, key, delta), annot))
    # oracle: best candidate per class on the other images
    summary('oracle (per class best)', evaluate(lambda c, a: max(data[c], key=lambda x: data[c][x]['j'].mean()), annot))
