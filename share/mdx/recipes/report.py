"""The Fashion-MNIST recipe's report: one table (Markdown and JSON) of what each objective cost and
what it gave, and its loss curves as a PNG.

    /usr/bin/python3 share/mdx/recipes/report.py DIR

Reads DIR/<objective>.ckpt.metrics.jsonl, gen/<objective>.ckpt.metrics.jsonl, *.seconds,
probe/*.json and fid/*.json, whichever exist; writes DIR/results.md, DIR/results.json and
DIR/loss-curves.png, and prints the Markdown table.
"""
import json
import math
import os
import sys

from PIL import Image, ImageDraw

OBJECTIVES = ("umd", "mae", "ldae", "dit", "mage", "lmd", "latent-umd")
COLOURS = {"umd": (214, 39, 40), "mae": (31, 119, 180), "ldae": (44, 160, 44), "dit": (148, 103, 189),
           "mage": (255, 127, 14), "lmd": (23, 190, 207), "latent-umd": (140, 86, 75)}


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def metrics(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def seconds(path):
    return int(open(path).read().strip()) if os.path.exists(path) else None


def fmt(value, spec):
    return "" if value is None else format(value, spec)


def row(d, objective):
    pre = metrics(os.path.join(d, f"{objective}.ckpt.metrics.jsonl"))
    gen = metrics(os.path.join(d, "gen", f"{objective}.ckpt.metrics.jsonl"))
    probe = load_json(os.path.join(d, "probe", f"{objective}.json"))
    fid = load_json(os.path.join(d, "fid", f"{objective}.json"))
    sample_s = seconds(os.path.join(d, "samples", f"{objective}.seconds"))
    samples = fid["inputs"][0]["count"] if fid and fid.get("inputs") else None  # mdx-fid's report
    tail = pre[-5:]
    return {
        "objective": objective,
        "pretrain_steps": pre[-1]["step"] if pre else None,
        "first_loss": pre[0]["loss"] if pre else None,
        "final_loss": pre[-1]["loss"] if pre else None,
        "images_per_s": round(sum(m["images_per_s"] for m in tail) / len(tail), 1) if tail else None,
        "pretrain_seconds": seconds(os.path.join(d, f"{objective}.seconds")),
        "probe_top1": probe.get("top1") if probe else None,
        "finetune_steps": gen[-1]["step"] if gen else None,
        "finetune_seconds": seconds(os.path.join(d, "gen", f"{objective}.seconds")),
        "fid": fid.get("fid") if fid else None,
        "sample_seconds": sample_s,
        "samples_per_s": round(samples / sample_s, 1) if samples and sample_s else None,
    }


def plot(d, curves, path):
    """Loss / first loss against the step, one panel per stage, log scale (losses of different
    objectives are different quantities: each is drawn relative to its own start)."""
    W, H, pad = 520, 340, 48
    img = Image.new("RGB", (2 * W, H), "white")
    draw = ImageDraw.Draw(img)
    for panel, (title, series) in enumerate(curves):
        x0 = panel * W
        draw.text((x0 + pad, 10), title, fill="black")
        pts = [(m["step"], m["loss"] / s[0]["loss"]) for s in series.values() if s for m in s if m["loss"] > 0]
        if not pts:
            continue
        smax = max(p[0] for p in pts)
        lo = min(p[1] for p in pts)
        lo_log, hi_log = math.log10(min(lo, 0.9)), math.log10(max(max(p[1] for p in pts), 1.0))
        sx = lambda s: x0 + pad + (W - 2 * pad) * s / max(smax, 1)  # noqa: E731
        sy = lambda v: H - pad - (H - 2 * pad) * (math.log10(v) - lo_log) / (hi_log - lo_log)  # noqa: E731
        draw.rectangle([x0 + pad, pad, x0 + W - pad, H - pad], outline="black")
        for k in range(int(math.floor(lo_log)), int(math.ceil(hi_log)) + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** k
                if 10 ** lo_log <= v <= 10 ** hi_log:
                    draw.line([x0 + pad - 4, sy(v), x0 + pad, sy(v)], fill="black")
                    draw.text((x0 + 4, sy(v) - 6), f"{v:g}", fill="black")
        draw.text((x0 + W - pad - 60, H - pad + 8), f"step {smax}", fill="black")
        draw.text((x0 + pad, H - pad + 8), "loss / first loss (log)", fill="black")
        for i, (name, s) in enumerate(series.items()):
            line = [(sx(m["step"]), sy(m["loss"] / s[0]["loss"])) for m in s if m["loss"] > 0]
            if len(line) > 1:
                draw.line(line, fill=COLOURS[name], width=2)
            draw.text((x0 + W - pad - 50, pad + 6 + 14 * i), name, fill=COLOURS[name])
    img.save(path)


def main():
    d = sys.argv[1]
    rows = [row(d, o) for o in OBJECTIVES if os.path.exists(os.path.join(d, f"{o}.ckpt.metrics.jsonl"))]
    pixels = load_json(os.path.join(d, "probe", "pixels.json"))
    floor = load_json(os.path.join(d, "fid", "data.json"))
    extractor = floor.get("extractor") if floor else None
    result = {"objectives": rows, "raw_pixel_probe_top1": pixels.get("top1") if pixels else None,
              "fid_train_vs_test": floor.get("fid") if floor else None, "fid_extractor": extractor}
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    md = ["| objective | pre-train steps | first loss | final loss | images/s | pre-train s | probe top-1 | "
          "fine-tune steps | fine-tune s | samples/s | FID |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['objective']} | {fmt(r['pretrain_steps'], 'd')} | {fmt(r['first_loss'], '.4f')} | "
                  f"{fmt(r['final_loss'], '.4f')} | {fmt(r['images_per_s'], '.0f')} | "
                  f"{fmt(r['pretrain_seconds'], 'd')} | {fmt(r['probe_top1'] and 100 * r['probe_top1'], '.2f')} | "
                  f"{fmt(r['finetune_steps'], 'd')} | {fmt(r['finetune_seconds'], 'd')} | "
                  f"{fmt(r['samples_per_s'], '.1f')} | {fmt(r['fid'], '.3f')} |")
    if pixels:
        md.append(f"| raw pixels | | | | | | {100 * pixels['top1']:.2f} | | | | |")
    if floor:
        md.append(f"| train vs test images | | | | | | | | | | {floor['fid']:.3f} |")
    text = "\n".join(md) + "\n"
    if floor:
        text += f"\nFID extractor: {json.dumps(extractor)}\n"
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write(text)
    print(text, end="")
    curves = [("pre-training", {r["objective"]: metrics(os.path.join(d, f"{r['objective']}.ckpt.metrics.jsonl"))
                                for r in rows}),
              ("generation fine-tune", {r["objective"]: metrics(os.path.join(d, "gen", f"{r['objective']}.ckpt.metrics.jsonl"))
                                        for r in rows})]
    plot(d, curves, os.path.join(d, "loss-curves.png"))
    pngs = [os.path.join(root, f) for root, _, files in os.walk(d) for f in files if f.endswith(".png")]
    print("\nPictures:\n" + "\n".join("  " + p for p in sorted(pngs)), file=sys.stderr)


if __name__ == "__main__":
    main()
