"""GPU/CPU prototype: is the synthetic task learnable, do region graphs help? (not shipped)"""
import sys, time, json, numpy as np, torch, os, argparse
from multiprocessing import Pool
from strg.synth.video import VideoSpec, render
from strg.models import build_model
p = argparse.ArgumentParser()
p.add_argument('--n', type=int, default=3000); p.add_argument('--size', type=int, default=64)
p.add_argument('--T', type=int, default=16); p.add_argument('--runs', default='i3d,joint_gcn')
p.add_argument('--iters', type=int, default=1500); p.add_argument('--bs', type=int, default=32)
p.add_argument('--width', type=int, default=8); p.add_argument('--dim', type=int, default=32)
p.add_argument('--lr', type=float, default=0.1); p.add_argument('--K', type=int, default=8)
p.add_argument('--blocks', default='1,1,1,1'); p.add_argument('--workers', type=int, default=2)
p.add_argument('--device', default='cpu'); p.add_argument('--out', default='/tmp/proto/res.jsonl')
p.add_argument('--budget', type=float, default=1e9)
a = p.parse_args()
dev = torch.device(a.device); K = a.K
def one(i):
    r = render(VideoSpec(seed=0, index=i, video_id=str(i), actions=(i % 10,), frames=a.T, size=a.size, fps=12, container='webm'))
    pb = np.zeros((a.T, K, 4), np.float32); pm = np.zeros((a.T, K), bool)
    for t, (b, s) in enumerate(r['proposals']):
        b = b[:K]; pb[t, :len(b)] = b; pm[t, :len(b)] = True
    gb = np.zeros((a.T, K, 4), np.float32); gm = np.zeros((a.T, K), bool)
    tb = np.stack([o[3] for o in r['objects']], 1)
    for t in range(a.T):
        ok = ~np.isnan(tb[t, :, 0]); bb = tb[t][ok][:K]; gb[t, :len(bb)] = bb; gm[t, :len(bb)] = True
    return r['frames'], pb, pm, gb, gm, i % 10
t = time.time()
with Pool(a.workers) as pool: res = pool.map(one, range(a.n), chunksize=16)
D = {k: torch.from_numpy(np.stack([r[j] for r in res])).to(dev) for j, k in enumerate(['frames', 'pb', 'pm', 'gb', 'gm'])}
D['y'] = torch.tensor([r[5] for r in res], device=dev)
print('gen', round(time.time() - t, 1), flush=True)
N = a.n; nval = N // 5
mean = torch.tensor([0.45] * 3, device=dev).view(1, 3, 1, 1, 1); std = torch.tensor([0.225] * 3, device=dev).view(1, 3, 1, 1, 1)
def batch(idx, gt):
    x = D['frames'][idx].permute(0, 4, 1, 2, 3).float() / 255
    return (x - mean) / std, D['gb' if gt else 'pb'][idx], D['gm' if gt else 'pm'][idx], D['y'][idx]
tr = torch.arange(nval, N, device=dev); va = torch.arange(0, nval, device=dev)
def evaluate(m, idxs, gt):
    m.eval(); c5 = c1 = 0
    with torch.no_grad():
        for s in range(0, len(idxs), 128):
            x, b, mk, y = batch(idxs[s:s + 128], gt); out = m(x, b, mk) if m.uses_boxes else m(x)
            c1 += (out.argmax(1) == y).sum().item()
    m.train(); return 100 * c1 / len(idxs)
T0 = time.time()
for run in a.runs.split(','):
    if time.time() - T0 > a.budget: break
    name, gt = run.replace('+gt', ''), run.endswith('+gt')
    torch.manual_seed(0)
    m = build_model(f'{name}_r50', num_classes=10, width=a.width, stage_blocks=tuple(int(x) for x in a.blocks.split(',')), dim=a.dim, frozen_bn=False).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.iters, pct_start=0.15)
    g = torch.Generator().manual_seed(1); t0 = time.time(); curve = []
    perm = tr[torch.randperm(len(tr), generator=g).to(dev)]; pos = 0; losses = []
    for it in range(a.iters):
        if pos + a.bs > len(perm): perm = tr[torch.randperm(len(tr), generator=g).to(dev)]; pos = 0
        idx = perm[pos:pos + a.bs]; pos += a.bs
        x, b, mk, y = batch(idx, gt)
        out = m(x, b, mk) if m.uses_boxes else m(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); losses.append(loss.item())
        if (it + 1) % max(1, a.iters // 6) == 0:
            curve.append((it + 1, round(float(np.mean(losses[-50:])), 3), evaluate(m, va, gt)))
            print(run, curve[-1], f'{time.time()-t0:.0f}s', flush=True)
    r = dict(run=run, val=evaluate(m, va, gt), train=evaluate(m, tr[:nval], gt), curve=curve, secs=round(time.time() - t0), args=vars(a))
    print('RESULT', json.dumps(r), flush=True)
    with open(a.out, 'a') as f: f.write(json.dumps(r) + '\n')
