# An independent PyTorch implementation of the truncation study's config S (spec sections
# 2-5 and 9: d = 64, T = 64, batch 64, alpha = 0.5, SGD 0.03 / momentum 0.9 / wd 1e-4,
# frozen N(0,1) token and position tables, frozen uniform unembedding, identity W_Q,
# ReLU FFN 256 in both layers, loss at trigger occurrences >= 2), written to check claim C5
# (layer-2 attention mass on tau slots) outside latentlab. It shares no code with the crate.
#
#   python docs/crosscheck/c5_torch.py SEED THREADS STEPS BATCH [ALPHA]   # e.g. 0 1 2000 64
#
# Prints, at a few steps, the layer-2 attention of scored trigger queries on a fixed noisy
# evaluation batch (256 sequences): total mass on tau slots and on ybar slots, the share of
# "forced" queries (every earlier trigger follower holds tau) and the tau-slot mass of the
# forced queries and of the others; at step 800 the C7 spectrum check of layer 2's W_2 and
# at the last step the C6c truncation check. Results: docs/crosscheck/README.md.
import json, math, sys
import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
BATCH = int(sys.argv[4]) if len(sys.argv) > 4 else 64
ALPHA = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
d, T, V = 64, 64, 65
Q, TAU = 1, 2

import os
here = os.path.dirname(os.path.abspath(__file__))
st = json.load(open(os.path.join(here, '..', '..', 'data', 'tinyshakespeare-char-stats.json')))
uni = np.array(st['unigram_counts'], dtype=np.float64); uni /= uni.sum()
big = np.array(st['bigram_counts'], dtype=np.float64); big /= big.sum(1, keepdims=True)
cdf_b = np.cumsum(big, 1)
cdf_u = np.cumsum(uni)

def batch(rng, n, alpha):
    x = np.zeros((n, T + 1), dtype=np.int64)
    cnt = np.zeros((n, T + 1), dtype=np.int64)
    ybar = rng.integers(0, V, size=n)
    x[:, 0] = np.minimum(np.searchsorted(cdf_u, rng.random(n)), V - 1)
    c = np.zeros(n, dtype=np.int64)
    for t in range(T):
        cur = x[:, t]
        trig = cur == Q
        c = c + trig
        cnt[:, t] = np.where(trig, c, 0)
        u = rng.random(n)
        nxt_b = np.minimum((cdf_b[cur] < u[:, None]).sum(1), V - 1)
        noise = rng.random(n) < alpha
        x[:, t + 1] = np.where(trig, np.where(noise, TAU, ybar), nxt_b)
    return torch.tensor(x[:, :T]), torch.tensor(x[:, 1:]), torch.tensor(cnt[:, :T]), torch.tensor(ybar)

g = torch.Generator().manual_seed(1000 + seed)
E = torch.randn(V, d, generator=g)
P = torch.randn(T, d, generator=g)
U = (torch.rand(V, d, generator=g) * 2 - 1) / math.sqrt(d)
def lin(o, i):
    b = 1 / math.sqrt(i)
    return ((torch.rand(o, i, generator=g) * 2 - 1) * b).requires_grad_()
layers = [dict(wk=lin(d, d), wv=lin(d, d), wo=lin(d, d), w1=lin(4 * d, d), w2=lin(d, 4 * d)) for _ in range(2)]
params = [p for l in layers for p in l.values()]
mask = torch.full((T, T), float('-inf')).triu(1)

def forward(x, edit=None):
    # edit = (layer, name, replacement matrix): evaluate with one weight replaced.
    h = E[x] + P
    pats = []
    for li, l in enumerate(layers):
        w = {k: (edit[2] if edit and edit[0] == li and edit[1] == k else m) for k, m in l.items()}
        k = h @ w['wk'].T
        v = h @ w['wv'].T
        s = h @ k.transpose(1, 2) / math.sqrt(d) + mask
        a = s.softmax(-1)
        pats.append(a)
        h = h + (a @ v) @ w['wo'].T
        h = h + F.relu(h @ w['w1'].T) @ w['w2'].T
    return h @ U.T, pats

def low_rank(m, rho):
    u, sv, vh = torch.linalg.svd(m.detach(), full_matrices=False)
    r = int(rho * d)
    return (u[:, :r] * sv[:r]) @ vh[:r]

def c7():
    # Left singular vectors of layer 2's W_2 against u_tau (the tau row of W_U).
    u, sv, _ = torch.linalg.svd(layers[1]['w2'].detach(), full_matrices=False)
    cos = (u.T @ (U[TAU] / U[TAU].norm())).abs()
    return cos[0].item(), cos[1:].max().item(), sv[0].item(), sv[1].item()

def c6c(xb, yb, cb):
    # Max clean accuracy with W_V or W_O of layer 2 truncated to rho in {0.05, 0.1, 0.2}.
    best = 0.0
    sel = cb >= 2
    with torch.no_grad():
        for name in ('wv', 'wo'):
            for rho in (0.05, 0.1, 0.2):
                logits, _ = forward(xb, (1, name, low_rank(layers[1][name], rho)))
                best = max(best, (logits[sel].argmax(-1) == yb[sel]).float().mean().item())
    return best

opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
rng = np.random.default_rng(seed)
def probe(xb, cb):
    with torch.no_grad():
        _, pats = forward(xb)
    a2 = pats[1]
    n, t = xb.shape
    tot_tau = tot_y = 0.0; nq = 0; forced = 0; f_tau = 0.0; c_tau = 0.0; nc = 0
    for b in range(n):
        foll = [s for s in range(1, t) if xb[b, s - 1] == Q]
        for qi in range(t):
            if cb[b, qi] < 2: continue
            fs = [s for s in foll if s <= qi]
            taus = [s for s in fs if xb[b, s] == TAU]
            ys = [s for s in fs if xb[b, s] != TAU]
            mt = a2[b, qi, taus].sum().item(); my = a2[b, qi, ys].sum().item()
            tot_tau += mt; tot_y += my; nq += 1
            if not ys: forced += 1; f_tau += mt
            else: nc += 1; c_tau += mt
    return tot_tau / nq, tot_y / nq, forced / nq, f_tau / max(forced, 1), c_tau / max(nc, 1)

ev = batch(np.random.default_rng(10_000 + seed), 256, ALPHA)
clean = batch(np.random.default_rng(20_000 + seed), 256, 0.0)
for step in range(1, STEPS + 1):
    x, y, c, _ = batch(rng, BATCH, ALPHA)
    logits, _ = forward(x)
    sel = c >= 2
    loss = F.cross_entropy(logits[sel], y[sel])
    opt.zero_grad(); loss.backward(); opt.step()
    if step in (100, 200, 300, 400, 600, 800, 1000, 1500, 2000) or step == STEPS:
        r = probe(ev[0], ev[2])
        print(f"step {step} loss {loss.item():.3f} tau {r[0]:.3f} ybar {r[1]:.3f} forced_frac {r[2]:.3f} forced_tau {r[3]:.3f} choice_tau {r[4]:.3f}", flush=True)
    if step == 800:
        top, other, s1, s2 = c7()
        print(f"step {step} C7: cos(top left sv of W_2, u_tau) {top:.2f}, others <= {other:.2f}; sigma1 {s1:.2f} sigma2 {s2:.2f}", flush=True)
    if step == STEPS:
        print(f"step {step} C6c: max clean acc with W_V or W_O of layer 2 at rho <= 0.2: {c6c(clean[0], clean[1], clean[2]):.3f}", flush=True)
