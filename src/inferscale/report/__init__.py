"""What an experiment's analysis is shown as: figures, the HTML report, the printed summary and
the W&B Report."""
