"""Supervised fine-tuning entry point, started by the `deepspeed` launcher (one process per rank).

    deepspeed --num_gpus 2 --module inferscale.models.sft --spec spec.json

The spec (written by the sft task) names the model, tokenizer, training file, DeepSpeed config
and hyper-parameters. The loss is taken on solution tokens only; the prompt is masked out.
The result is a Hugging Face model directory with its tokenizer, marked complete by
`train_summary.json`, which rank 0 writes last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from inferscale.models.divergence import finite_loss_callback
from inferscale.models.files import SFT_SUMMARY_FILE
from inferscale.models.processes import leave_with_owner
from inferscale.models.training_progress import step_callback
from inferscale.numerics import describe

IGNORE_INDEX = -100


def encode_example(tokenizer, prompt: str, solution: str, max_length: int) -> dict:
    """Token ids of prompt + solution + EOS, with labels only on the solution and EOS."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    solution_ids = tokenizer(solution, add_special_tokens=False)["input_ids"]
    solution_ids = solution_ids + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + solution_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + solution_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def training_examples(spec: dict, tokenizer) -> list[dict]:
    """The training problems encoded with the policy's prompts (its chat template, system prompt
    and few-shot examples, as `data.format` says): it is trained on what it is evaluated with."""
    from inferscale.config import StepFormatConfig
    from inferscale.data.prompting import policy_format
    from inferscale.data.records import read_problems

    fmt = policy_format(StepFormatConfig(**spec["format"]), tokenizer)
    return [
        encode_example(tokenizer, fmt.prompt(p.question), fmt.solution(p.steps), spec["max_length"])
        for p in read_problems(spec["train_file"])
        if p.steps
    ]


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        gap = width - len(e["input_ids"])
        ids.append(e["input_ids"] + [pad_id] * gap)
        labels.append(e["labels"] + [IGNORE_INDEX] * gap)
        mask.append([1] * len(e["input_ids"]) + [0] * gap)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def load_model(spec: dict, tokenizer):
    from transformers import AutoModelForCausalLM

    from inferscale.models.factory import new_tiny_llama, tiny_llama_config

    model = spec["model"]
    if model.get("hub_id"):
        return AutoModelForCausalLM.from_pretrained(model["hub_id"])
    config = tiny_llama_config(
        hidden_size=model["hidden_size"],
        num_layers=model["num_layers"],
        num_heads=model["num_heads"],
        intermediate_size=model["intermediate_size"],
        tokenizer=tokenizer,
        max_position_embeddings=spec["max_length"],
    )
    return new_tiny_llama(config, seed=spec["seed"])


def training_arguments(spec: dict):
    """The Trainer's arguments from a training spec (SFT's and the PRM's share these keys)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(spec["output_dir"]) / "trainer"),
        max_steps=spec["max_steps"],
        per_device_train_batch_size=spec["per_device_batch_size"],
        gradient_accumulation_steps=spec["gradient_accumulation_steps"],
        learning_rate=spec["learning_rate"],
        warmup_steps=spec["warmup_steps"],
        lr_scheduler_type=spec["lr_scheduler"],
        weight_decay=spec["weight_decay"],
        max_grad_norm=1.0,
        bf16=spec["bf16"],
        logging_steps=spec["logging_steps"],
        save_strategy="no",
        report_to=spec["report_to"],
        run_name=spec.get("run_name"),
        deepspeed=spec["deepspeed_config"],
        seed=spec["seed"],
        data_seed=spec["seed"],
        dataloader_num_workers=0,
        use_cpu=spec["use_cpu"],
        remove_unused_columns=False,
        disable_tqdm=True,
    )


def train(spec: dict) -> None:
    import torch
    from transformers import AutoTokenizer, Trainer

    torch.set_num_threads(spec.get("threads_per_rank", 1))
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    examples = training_examples(spec, tokenizer)
    model = load_model(spec, tokenizer)
    output_dir = Path(spec["output_dir"])
    args = training_arguments(spec)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=lambda batch: pad_batch(batch, tokenizer.pad_token_id),
        callbacks=[finite_loss_callback(), step_callback(output_dir)],
    )
    start = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - start
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        history = [row for row in trainer.state.log_history if "loss" in row]
        summary = {
            "train_loss": result.training_loss,
            "final_loss": history[-1]["loss"] if history else None,
            "steps": trainer.state.global_step,
            "examples": len(examples),
            "train_seconds": elapsed,
            "world_size": args.world_size,
            "engine": type(trainer.model_wrapped).__name__,
            "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage
            if trainer.is_deepspeed_enabled
            else None,
            "numerics": describe(),
            "loss_history": history,
        }
        (output_dir / SFT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        if "wandb" in spec["report_to"]:
            import wandb

            # The Trainer's callback leaves its run open; finished only at interpreter exit,
            # the run's log can be completed a minute after this process has gone.
            if wandb.run is not None:
                wandb.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="JSON file written by the sft task")
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the launcher")
    args = parser.parse_args()
    leave_with_owner()
    train(json.loads(Path(args.spec).read_text()))


if __name__ == "__main__":
    main()
