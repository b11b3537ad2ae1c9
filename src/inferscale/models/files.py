"""The files a training writes last, whose presence says it finished: named apart from the
trainings, so that a module that reads them does not import (and is not keyed on) their code."""

SFT_SUMMARY_FILE = "train_summary.json"
PRM_SUMMARY_FILE = "prm_summary.json"
