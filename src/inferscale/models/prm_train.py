"""PRM training entry point, started by the `deepspeed` launcher (one process per rank).

    deepspeed --num_gpus 2 --module inferscale.models.prm_train --spec spec.json

The PRM is a causal LM (initialised from `init_model`: the policy's SFT checkpoint, or a hub id)
read Math-Shepherd's way (see `inferscale.models.prm`); the loss is the cross-entropy between the
two-way good/bad softmax at each step tag and the step's label. At the end rank 0 scores the
held-out labelled solutions (`eval_file`) with the saved model: step ROC AUC and best-of-n
selection. The result is a Hugging Face model directory with its tokenizer and `prm.json`,
marked complete by `prm_summary.json`, which rank 0 writes last.

Spec keys (JSON object); the first four are required:
    init_model            HF model directory or hub id the PRM starts from
    train_file            step labels JSONL (`inferscale.data.step_labels`)
    output_dir            where the model, tokenizer, prm.json and prm_summary.json go
    deepspeed_config      DeepSpeed config file (ZeRO stage etc.)
    tokenizer_dir         default: init_model
    eval_file             held-out step labels JSONL; null: no evaluation
    format                StepFormat fields (tag, answer_phrase, prompt_template)
    good_token, bad_token candidate strings, each one token ("+"/"-"; " +"/" -" for the
                          project's word-level tokenizer)
    label                 "soft" (share of correct rollouts) or "hard" (0/1) targets
    max_length, seed, max_steps, per_device_batch_size, gradient_accumulation_steps,
    learning_rate, warmup_steps, lr_scheduler, weight_decay, bf16, use_cpu,
    threads_per_rank, logging_steps, report_to, run_name   as for SFT
    eval_batch_size, eval_device   the held-out scoring (rank 0, after training)
    exact_validity        {modulus, answer_phrase} of the synthetic task: the held-out
                          metrics then hold the step AUC against exact validity too
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import asdict
from pathlib import Path

from inferscale.models.divergence import finite_loss_callback
from inferscale.models.files import PRM_SUMMARY_FILE
from inferscale.models.processes import leave_with_owner
from inferscale.models.training_progress import step_callback
from inferscale.numerics import describe

REQUIRED_KEYS = ("init_model", "train_file", "output_dir", "deepspeed_config")
DEFAULTS = {
    "tokenizer_dir": None,
    "eval_file": None,
    "format": {},
    "good_token": "+",
    "bad_token": "-",
    "label": "soft",
    "max_length": 256,
    "seed": 0,
    "max_steps": 100,
    "per_device_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-4,
    "warmup_steps": 0,
    "lr_scheduler": "cosine",
    "weight_decay": 0.0,
    "bf16": False,
    "use_cpu": True,
    "threads_per_rank": 1,
    "logging_steps": 10,
    "report_to": [],
    "run_name": None,
    "eval_batch_size": 32,
    "eval_device": "cpu",
    "exact_validity": None,
}


def complete_spec(spec: dict) -> dict:
    """The spec with defaults filled in; unknown or missing keys are refused by name."""
    missing = [k for k in REQUIRED_KEYS if spec.get(k) is None]
    unknown = sorted(set(spec) - set(REQUIRED_KEYS) - set(DEFAULTS))
    if missing or unknown:
        raise ValueError(f"PRM spec: missing keys {missing}, unknown keys {unknown}")
    if spec.get("label", "soft") not in ("soft", "hard"):
        raise ValueError(f"PRM spec: label must be 'soft' or 'hard', got {spec['label']!r}")
    return {**DEFAULTS, **spec}


def make_trainer_class():
    from transformers import Trainer

    from inferscale.models.prm import step_loss

    class PRMTrainer(Trainer):
        """The HF Trainer with the PRM's loss at step tags instead of the LM loss."""

        # step_loss is a per-micro-batch mean: let the Trainer divide it for accumulation.
        loss_is_scaled_for_ga = False

        def __init__(self, *args, candidates: tuple[int, int], **kwargs):
            super().__init__(*args, **kwargs)
            self.candidates = candidates

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("step_targets")
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = step_loss(outputs.logits, targets, self.candidates)
            return (loss, outputs) if return_outputs else loss

    return PRMTrainer


def evaluate_saved(
    model_dir: Path, eval_file: str, batch_size: int, device: str, exact: dict | None
) -> dict:
    """Score the held-out solutions with the saved PRM; step AUC (against exact validity too,
    where `exact` gives the synthetic task's modulus and answer phrase) and best-of-n."""
    from inferscale.data.step_labels import read_step_labels
    from inferscale.data.step_validity import validity_of
    from inferscale.models.prm_metrics import score_heldout
    from inferscale.models.prm_scorer import PRMScorer

    records = read_step_labels(eval_file)
    scorer = PRMScorer.from_pretrained(model_dir, batch_size=batch_size, device=device)
    validity = validity_of(exact["modulus"], exact["answer_phrase"]) if exact else None
    return score_heldout(scorer, records, validity)


def _agreement(metrics: dict) -> dict:
    agreement = metrics.get("label_agreement")
    if not agreement or agreement["rate"] is None:
        return {}
    return {"eval/label_agreement": agreement["rate"]}


def train(spec: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inferscale.data.step_labels import read_step_labels
    from inferscale.data.steps import StepFormat
    from inferscale.models.prm import (
        PRM_CONFIG_FILE,
        candidate_token_ids,
        collate_labelled,
        encode_labelled,
    )
    from inferscale.models.sft import training_arguments

    spec = complete_spec(spec)
    torch.set_num_threads(spec["threads_per_rank"])
    fmt = StepFormat(**spec["format"])
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"] or spec["init_model"])
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    candidates = candidate_token_ids(tokenizer, spec["good_token"], spec["bad_token"])
    records = read_step_labels(spec["train_file"])
    encoded = [
        encode_labelled(tokenizer, fmt, r, spec["max_length"], spec["label"]) for r in records
    ]
    examples = [e for e in encoded if e is not None]
    if not examples:
        raise ValueError(f"no step tag within max_length in {spec['train_file']}")
    model = AutoModelForCausalLM.from_pretrained(spec["init_model"])
    output_dir = Path(spec["output_dir"])
    args = training_arguments(spec)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=lambda batch: collate_labelled(batch, pad_id),
        candidates=candidates,
        callbacks=[finite_loss_callback(), step_callback(output_dir)],
    )
    start = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - start
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(output_dir)
    prm_config = {
        "format": asdict(fmt),
        "good_token": spec["good_token"],
        "bad_token": spec["bad_token"],
    }
    (output_dir / PRM_CONFIG_FILE).write_text(json.dumps(prm_config, indent=2))
    history = [row for row in trainer.state.log_history if "loss" in row]
    summary = {
        "train_loss": result.training_loss,
        "final_loss": history[-1]["loss"] if history else None,
        "steps": trainer.state.global_step,
        "examples": len(examples),
        "dropped_examples": len(records) - len(examples),
        "train_seconds": elapsed,
        "world_size": args.world_size,
        "engine": type(trainer.model_wrapped).__name__,
        "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage
        if trainer.is_deepspeed_enabled
        else None,
        "label": spec["label"],
        "candidates": {"good": spec["good_token"], "bad": spec["bad_token"]},
        "numerics": describe(),
    }
    # The saved directory is evaluated, as the scorer will read it (under ZeRO-3 only the
    # saved copy is whole); the training engine and its optimizer state go first.
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    metrics = (
        evaluate_saved(
            output_dir,
            spec["eval_file"],
            spec["eval_batch_size"],
            spec["eval_device"],
            spec["exact_validity"],
        )
        if spec["eval_file"]
        else {}
    )
    summary |= {"eval": metrics, "loss_history": history}
    wandb_run = None
    if "wandb" in spec["report_to"]:
        import wandb

        wandb_run = wandb.run
        if wandb_run is not None and metrics:
            wandb_run.log(
                {
                    f"eval/{k}": v
                    for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                | _agreement(metrics)
            )
    (output_dir / PRM_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    # The Trainer's callback leaves its run open; finished only at interpreter exit, the run's
    # log can be completed a minute after this process has gone.
    if wandb_run is not None:
        wandb_run.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="JSON file written by the PRM task")
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the launcher")
    args = parser.parse_args()
    leave_with_owner()
    train(json.loads(Path(args.spec).read_text()))


if __name__ == "__main__":
    main()
