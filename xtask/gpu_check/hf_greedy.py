#!/usr/bin/env python3
"""Greedy continuations by Hugging Face transformers, for `cargo xtask gpu-check`.

usage: hf_greedy.py MODEL_DIR TOKENS OUT.json PROMPT [PROMPT ...]

Loads the checkpoint in float32 (its weights are BF16 values, so float32 holds them exactly,
as qwenmk's cpu engine does), tokenizes each prompt without a chat template, and decodes
TOKENS tokens by argmax over the last position's logits with a KV cache. Writes
{"prompt_ids": [[...]], "generated": [[...]]}. Runs on CUDA when there is one, else the CPU.
"""

import json
import sys


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model_dir, tokens, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    prompts = sys.argv[4:]
    try:
        import torch
        from transformers import AutoTokenizer, Qwen3ForCausalLM
    except ImportError as e:
        print(f"transformers reference skipped: {e}", file=sys.stderr)
        return 3
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    all_prompt_ids, generated = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            all_prompt_ids.append(ids)
            out_ids = []
            past = None
            step_input = torch.tensor([ids], device=device)
            for _ in range(tokens):
                r = model(input_ids=step_input, past_key_values=past, use_cache=True)
                past = r.past_key_values
                nxt = int(torch.argmax(r.logits[0, -1].float()))
                out_ids.append(nxt)
                step_input = torch.tensor([[nxt]], device=device)
            generated.append(out_ids)
    with open(out, "w") as f:
        json.dump({"prompt_ids": all_prompt_ids, "generated": generated}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
