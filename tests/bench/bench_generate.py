"""Benchmark: the same questions answered one at a time and in left-padded batches, on the demo model.

Run from the repository root: `.venv/bin/python tests/bench/bench_generate.py` (options: --n, --batch_size,
--max_new_tokens, --model, --threads). Prints generated tokens per second for each way and their ratio.
"""
import argparse, os, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

def run(model, tok, prompts, settings, batch_size):
    "Answers to `prompts` in batches of `batch_size`: (rows, seconds)."
    from anima_nb.inference import generate_batch
    t0, rows = time.perf_counter(), []
    for i in range(0, len(prompts), batch_size): rows += generate_batch(model, tok, prompts[i:i + batch_size], settings)
    return rows, time.perf_counter() - t0

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=32, help='questions')
    ap.add_argument('--batch_size', type=int, default=8)
    ap.add_argument('--max_new_tokens', type=int, default=32)
    ap.add_argument('--model', default='local:tiny-llama', help='base model name or path')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch chooses)')
    a = ap.parse_args(argv)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from anima_nb.models import resolve_model, load_tokenizer
    from anima_nb.data import load_questions
    from anima_nb.inference import eval_prompt
    from transformers import AutoModelForCausalLM
    tok = load_tokenizer(a.model, padding_side='left')
    model = AutoModelForCausalLM.from_pretrained(resolve_model(a.model), dtype=torch.float32).eval()
    qs = (load_questions('pkg:sample_questions.json') * 2)[:a.n]
    prompts = sorted((eval_prompt(q['question']) for q in qs), key=lambda p: -len(tok(p).input_ids))
    settings = dict(max_new_tokens=a.max_new_tokens, do_sample=False, repetition_penalty=1.0)
    run(model, tok, prompts[:2], settings, 2)                                   # warm-up
    single, t1 = run(model, tok, prompts, settings, 1)
    batched, tb = run(model, tok, prompts, settings, a.batch_size)
    n1, nb = sum(r['answer_tokens'] for r in single), sum(r['answer_tokens'] for r in batched)
    same = sum(s == b for s, b in zip(single, batched))
    print(f"model {a.model}, {len(prompts)} questions, max_new_tokens {a.max_new_tokens}, torch threads {torch.get_num_threads()}")
    print(f"one at a time : {n1:5d} tokens in {t1:6.2f} s = {n1 / t1:7.1f} tokens/s")
    print(f"batches of {a.batch_size:<3d}: {nb:5d} tokens in {tb:6.2f} s = {nb / tb:7.1f} tokens/s")
    print(f"ratio         : {(nb / tb) / (n1 / t1):.2f}x   (identical answers: {same}/{len(prompts)})")

if __name__ == '__main__': main()
