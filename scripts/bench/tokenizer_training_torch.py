#!/usr/bin/env python3
"""Tokenizer training in PyTorch, for comparison with `nbp-cli train-tokenizer` on the same CPU.

Builds the tokenizer of `scripts/fixtures/tokenizer_fixtures.py` (the official structure with a width parameter)
and trains it as `nbp-cli train-tokenizer` does: 5-frame clips, random 32x32 crops of 64x64 moving-shapes clips
drawn like the built-in `moving-shapes-plain` data, L1 + L2 loss, AdamW (0.9, 0.99) without weight decay, gradient
norm clipped at 1, 100 warm-up steps, then a constant learning rate (no decay). The defaults are the earlier demo
recipe (batch 1, rounding from the first step); `BATCH=8 NOQ_STEPS=600` is the one of `assets/demo/tokenizer.toml`. Every 250 steps it prints the seconds so far, the
PSNR of 8 held-out clips next to that of filling each frame with its mean colour (whole frames and their centre
32x32 crops), the share of the clips' chroma (mean |RGB − grey|) the reconstructions keep, the last training loss, the mean |z| of the encoder output before FSQ and the share of |z| > 2.

    python scripts/bench/tokenizer_training_torch.py CHANNELS GROUPS STEPS LR
    python scripts/bench/tokenizer_training_torch.py 8,16,32,32 4 1500 1e-3     # the demo architecture

Environment (the diagnostics of assets/README.md, "What they can and cannot do"):
  NOQ=1       train without quantisation (the decoder reads the bounded encoder output; validation still rounds)
  NOQ_STEPS=n the same for the first n steps only, then with rounding (`--unquantized-steps n` of the trainer)
  CROP, BATCH training crop (default 32) and clips per step (default 1)
  DATA        random (default: random colours, as the built-in data), palette (6 shape colours, 4 backgrounds),
              fixed (one colour per shape kind, one background)
  NONORM=1    replace every GroupNorm by the identity
  ZINIT=k     multiply the encoder's last 1x1 convolution by k at initialisation (wider spread of z)
  OVERFIT=1   train on one clip only (the first held-out clip) and report its PSNR: can the model fit at all?
  THREADS     PyTorch threads (default 2)
  SPEED=k     multiply every shape's speed by k (0: still shapes; the tokenizer's temporal compression is then free)
  LARGE=1     shapes 1.6 times larger (the built-in data's `--large` variant)
  SINGLE=1    the main shape only, no distractors (the built-in data's `-single` variant)
  LEVELS      FSQ levels (default 8,8,8,5: 2560 codes; 8,8,8,5,5 has 12800)
  SAVE=path   at every validation, write a PNG: the first 4 held-out clips' 5 frames, each above its reconstruction
"""
import os, sys, math, time, numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures'))
from tokenizer_fixtures import VideoTokenizer, GroupNorm3D
if os.environ.get('NONORM') == '1':
    GroupNorm3D.forward = lambda self, x: x
torch.manual_seed(0)
rng = np.random.default_rng(0)
torch.set_num_threads(int(os.environ.get('THREADS', '2')))
H = W = 64
NOQ = os.environ.get('NOQ') == '1'
NOQ_STEPS = int(os.environ.get('NOQ_STEPS', '0'))
CROP = int(os.environ.get('CROP', '32'))
BATCH = int(os.environ.get('BATCH', '1'))
DATA = os.environ.get('DATA', 'random')
OVERFIT = os.environ.get('OVERFIT') == '1'
SPEED = float(os.environ.get('SPEED', '1'))
LARGE = os.environ.get('LARGE') == '1'
SINGLE = os.environ.get('SINGLE') == '1'
assert DATA in ('random', 'palette', 'fixed'), f'DATA must be random, palette or fixed, got {DATA}'
SHAPE_COLOURS = np.array([[.95,.25,.2],[.25,.85,.3],[.3,.5,1.],[.95,.85,.2],[.9,.35,.9],[.25,.9,.9]], np.float32)
BACKGROUNDS = np.array([[.05,.05,.07],[.08,.1,.3],[.28,.08,.1],[.1,.25,.12]], np.float32)
def clip(frames, rng):
    objs = []
    n = 1 + rng.integers(3)
    if SINGLE: n = 1
    for i in range(n):
        col = rng.uniform(0.1, 1.0, 3); col[rng.integers(3)] = rng.uniform(0.8, 1.0)
        if DATA == 'palette': col = SHAPE_COLOURS[rng.integers(len(SHAPE_COLOURS))]
        size = rng.uniform(0.12, 0.22) * 64 * (1 if i == 0 else 0.8) * (1.6 if LARGE else 1)
        sp = rng.uniform(0.02, 0.06) * SPEED; ang = rng.uniform(0, 2*math.pi)
        objs.append(dict(shape=rng.integers(4), col=col, r=size, x=rng.uniform(.25,.75), y=rng.uniform(.25,.75), vx=sp*math.cos(ang), vy=sp*math.sin(ang)))
    bg = rng.uniform(0, 0.35, 3)
    if DATA == 'palette': bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if DATA == 'fixed':
        bg = BACKGROUNDS[0]
        for o in objs: o['col'] = SHAPE_COLOURS[o['shape']]
    v = np.empty((3, frames, H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    def refl(v):
        p = (v - 0.1) % 1.6
        return 0.1 + (p if p <= 0.8 else 1.6 - p)
    for t in range(frames):
        img = np.broadcast_to(bg[:, None, None], (3, H, W)).copy()
        for o in objs:
            cx, cy, r = refl(o['x'] + o['vx']*t)*W, refl(o['y'] + o['vy']*t)*H, o['r']
            dx, dy = xx - cx, yy - cy
            s = o['shape']
            if s == 0: m = dx*dx + dy*dy <= r*r
            elif s == 1: m = (abs(dx) <= .85*r) & (abs(dy) <= .85*r)
            elif s == 2: m = (dy <= .7*r) & (dy >= -r) & (abs(dx) <= (dy + r)*.6)
            else:
                d = np.sqrt(dx*dx+dy*dy); m = (d <= r) & (d >= .55*r)
            img[:, m] = o['col'][:, None]
        v[:, t] = img
    return v
arch = [int(a) for a in sys.argv[1].split(',')]
groups = int(sys.argv[2]); steps = int(sys.argv[3]); lr = float(sys.argv[4])
LEVELS = [int(a) for a in os.environ.get('LEVELS', '8,8,8,5').split(',')]
SAVE = os.environ.get('SAVE')
def save_png(path, img):
    # img: [H, W, 3] floats in [0, 1]; a plain RGB PNG written with zlib (no imaging library needed).
    import zlib, struct
    a = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    raw = b''.join(b'\x00' + a[y].tobytes() for y in range(a.shape[0]))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', a.shape[1], a.shape[0], 8, 2, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
m = VideoTokenizer(arch, [1]*4, [1]*4, groups, LEVELS)
ZINIT = float(os.environ.get('ZINIT', '1'))
with torch.no_grad():
    m.encoder_layers[-1].weight.mul_(ZINIT); m.encoder_layers[-1].bias.mul_(ZINIT)
print('params', sum(p.numel() for p in m.parameters()))
opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
valid = torch.tensor(np.stack([clip(5, np.random.default_rng(1000+i)) for i in range(8)]))
t0 = time.time()
for step in range(1, steps+1):
    cur = lr * min(1.0, step / 100)
    for g in opt.param_groups: g['lr'] = cur
    xs = []
    for _ in range(BATCH):
        v = clip(5, rng)
        oy, ox = rng.integers(0, 65-CROP, 2)
        xs.append(v[:, :, oy:oy+CROP, ox:ox+CROP])
    x = valid[:1] if OVERFIT else torch.tensor(np.stack(xs))
    z = m.encode(x)
    codes = m.fsq(z)[1] if not (NOQ or step <= NOQ_STEPS) else m.fsq(z)[0] / m.fsq.half_width[None,:,None,None,None]
    y = m.decode(codes)
    d = y - x
    loss = d.abs().mean() + (d*d).mean()
    opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    if OVERFIT and step % 50 == 0:
        print(f'step {step} {time.time()-t0:.0f}s PSNR of the fitted clip {10*math.log10(1/(d*d).mean().item()):.2f} '
              f'(its mean colour: {10*math.log10(1/((x.mean(dim=(3, 4), keepdim=True) - x)**2).mean().item()):.2f})', flush=True)
    if step % 250 == 0 and not OVERFIT:
        with torch.no_grad():
            c = m.fsq(m.encode(valid))[1]
            y = m.decode(c).clamp(0, 1)
            mse = ((y - valid)**2).mean().item()
            mc = valid.mean(dim=(3, 4), keepdim=True)
            mse0 = ((mc - valid)**2).mean().item()
            chroma = lambda v: (v - v.mean(dim=1, keepdim=True)).abs().mean().item()
            sat = chroma(y) / chroma(valid)
            vc = valid[..., 16:48, 16:48].contiguous()
            yc = m.decode(m.fsq(m.encode(vc))[1]).clamp(0, 1)
            msec = ((yc - vc)**2).mean().item()
            msec0 = ((vc.mean(dim=(3, 4), keepdim=True) - vc)**2).mean().item()
        if SAVE:
            rows = [torch.cat([v[:, i] for i in range(5)], dim=2) for v in (valid[0], y[0], valid[1], y[1], valid[2], y[2], valid[3], y[3])]
            save_png(SAVE, torch.cat(rows, dim=1).permute(1, 2, 0).numpy())
        print(f'step {step} {time.time()-t0:.0f}s PSNR {10*math.log10(1/mse):.2f} meancolour {10*math.log10(1/mse0):.2f}'
              f'  centre crop: PSNR {10*math.log10(1/msec):.2f} meancolour {10*math.log10(1/msec0):.2f}'
              f'  chroma kept {sat:.2f}  train loss {loss.item():.4f}  |z| {z.abs().mean().item():.2f} sat {(z.abs() > 2).float().mean().item():.2f}',
              flush=True)
