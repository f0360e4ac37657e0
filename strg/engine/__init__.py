"""Training and evaluation (paper section 6): ``train``, ``evaluate`` and their building blocks.

```python
from strg.engine import train, evaluate
final = train("configs/tiny_cpu.yaml", overrides=["train.iterations=20"], run_dir="runs/tiny")
metrics = evaluate("runs/tiny/config.yaml", checkpoint="runs/tiny")
```
See docs/engine.md.
"""

from strg.engine.evaluator import evaluate
from strg.engine.optim import lr_at
from strg.engine.step import TrainingDiverged
from strg.engine.trainer import train

__all__ = ["train", "evaluate", "lr_at", "TrainingDiverged"]
