"""``fastnn.common.io.read_history``: a run's history.csv back, checked."""
import math

import pytest

from fastnn.common.io import read_history


def _write(tmp_path, text):
    path = tmp_path / "history.csv"
    path.write_text(text)
    return path


def test_history_without_validation_reads_nan_there_only(tmp_path):
    rows = read_history(_write(tmp_path, "epoch,train_loss,val_loss,val_accuracy\n1,0.5,nan,nan\n"))
    assert rows[0]["epoch"] == 1 and rows[0]["train_loss"] == 0.5 and math.isnan(rows[0]["val_accuracy"])
    with pytest.raises(ValueError, match="not a finite number"):
        read_history(_write(tmp_path, "epoch,train_loss,val_loss\n1,nan,0.4\n"))
    with pytest.raises(ValueError, match="not a finite number"):
        read_history(_write(tmp_path, "epoch,train_loss,val_loss\n1,0.5,inf\n"))
    with pytest.raises(ValueError, match="columns"):
        read_history(_write(tmp_path, "epoch,train_loss\n1,0.5\n"))
