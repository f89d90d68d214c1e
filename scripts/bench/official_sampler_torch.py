"""The official NBP sampler's cost in PyTorch, written from the reference (§2.2 model, §3.1 cache, §3.2 loop, §3.5 filter).

Usage: python scripts/bench/official_sampler_torch.py [--device cuda|cpu] [--block 16] [--versus 1] [--dtype fp32|bf16]

It times what `nbp-cli bench sample` times, on the same kind of random weights: K600 frame prediction with
`official-base` (24 layers, 16 heads, width 1536, vocabulary 64000), a 512-token prefix, 768 generated tokens,
top-k 16000 and top-p 0.9, one sequence. Like the official code, each step hands the whole cache back as a list
of per-step tensors that is concatenated again (`torch.cat`), attention is `F.scaled_dot_product_attention` with
an explicit boolean mask (the block-causal mask on the prefix, all-ones afterwards), filtering runs per block
position, and `multinomial` draws each position. It prints the time of the prefill (step 0), of the steps after
it, and of the whole generation, the fastest of --repeats runs after --warmup untimed ones.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.key, self.query, self.value, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask, past):
        b, t, d = x.shape
        h = self.ln1(x)
        heads = lambda y: y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # noqa: E731
        k, q, v = heads(self.key(h)), heads(self.query(h)), heads(self.value(h))
        present = torch.stack((k, v))
        if past is not None:
            k = torch.cat((past[0], k), dim=-2)
            v = torch.cat((past[1], v), dim=-2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x)), present


class GPT(nn.Module):
    def __init__(self, vocab, d, n_layer, n_head, positions=5120):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, positions, d))
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)

    def forward_with_past(self, idx, mask, past, past_length):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb[:, past_length:past_length + t]
        if past is None:
            mask = mask[:, :, :t, :t]
        else:
            mask = torch.ones(1, 1, t, past_length + t, dtype=torch.bool, device=idx.device)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, mask, None if past is None else past[i])
            presents.append(present)
        return self.head(self.ln_f(x)), torch.stack(presents)


def top_k_top_p_filtering(logits, top_k, top_p):
    k = min(max(top_k, 1), logits.shape[-1])
    logits[logits < torch.topk(logits, k)[0][..., -1, None]] = -float("inf")
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits[remove.scatter(-1, sorted_indices, remove)] = -float("inf")
    return logits


def block_causal_mask(n, tps, device):
    block = torch.arange(n, device=device) // tps
    return (block[None, :] <= block[:, None])[None, None]


@torch.no_grad()
def sample_with_past(model, prefix, tps, steps, top_k, top_p, sync):
    mask = block_causal_mask(prefix.shape[1], tps, prefix.device)
    x, past, out = prefix, [], []
    p0 = prefix.shape[1]
    times = []
    for n in range(steps):
        t0 = time.perf_counter()
        past_length = n * tps + p0 - tps if past else 0
        logits, present = model.forward_with_past(x, mask, torch.cat(past, dim=-2) if past else None, past_length)
        past.append(present)
        logits = logits[:, -tps:, :].float()
        for j in range(tps):
            logits[:, j, :] = top_k_top_p_filtering(logits[:, j, :], top_k, top_p)
        probs = F.softmax(logits, dim=-1)
        x = torch.stack([torch.multinomial(probs[:, j, :], 1)[:, 0] for j in range(tps)], dim=1)
        out.append(x)
        sync()
        times.append(time.perf_counter() - t0)
    return torch.cat(out, dim=1), times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--versus", type=int, default=None, help="also time this block size (1 = NTP)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--prefix", type=int, default=512)
    p.add_argument("--tokens", type=int, default=768)
    p.add_argument("--vocab", type=int, default=64000)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--top-k", type=int, default=16000)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--no-tf32", action="store_true",
                   help="f32 products in full f32 on CUDA (by default TF32 on the tensor cores, as CubeCL does)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
    model = GPT(a.vocab, a.width, a.layers, a.heads).to(dev).eval()
    if a.dtype == "bf16":
        model = model.to(torch.bfloat16)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}, {a.dtype}{'' if a.no_tf32 or dev.type != 'cuda' or a.dtype != 'fp32' else ' (TF32 products)'}, {a.layers} layers × {a.width} wide, vocabulary {a.vocab}")
    prefix = torch.randint(0, a.vocab, (1, a.prefix), device=dev)
    best = {}
    blocks = [a.block] + ([a.versus] if a.versus else [])
    for _ in range(a.warmup):
        for tps in blocks:
            sample_with_past(model, prefix, tps, a.tokens // tps, a.top_k, a.top_p, sync)
    for _ in range(a.repeats):
        for tps in blocks:
            _, times = sample_with_past(model, prefix, tps, a.tokens // tps, a.top_k, a.top_p, sync)
            if tps not in best or sum(times) < sum(best[tps]):
                best[tps] = times
    for tps in blocks:
        times = best[tps]
        total = sum(times)
        rest = times[1:]
        mean_step = sum(rest) / max(len(rest), 1)
        print(f"block {tps:>2}: {len(times)} steps, {total:.3f} s ({a.tokens / total:.1f} tokens/s), "
              f"prefill {times[0] * 1e3:.1f} ms, later steps {mean_step * 1e3:.2f} ms each")
    if a.versus:
        print(f"block {a.block} is {sum(best[a.versus]) / sum(best[a.block]):.2f}x faster than block {a.versus}")


if __name__ == "__main__":
    main()
