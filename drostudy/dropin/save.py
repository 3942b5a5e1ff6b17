"""What the Robust* TRL trainers share besides the weights: the group column, and the robust settings
written beside every saved model (`drostudy_robust.json`, next to TRL's `training_args.bin`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from drostudy.dropin.configs import SETTINGS_FILE


@dataclass(frozen=True)
class GroupColumn:
    """The groups (domains) of a training set: `names` in id order; `ids` maps names to ids when the
    column holds names (None when it holds integer ids already)."""

    names: tuple[str, ...] = ()
    ids: dict | None = None

    @classmethod
    def from_dataset(cls, args, dataset, argument: str) -> GroupColumn:
        """Read the group column of `dataset`; ValueError when the objective needs it and it is missing."""
        column = args.group_column
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, dict):  # a DatasetDict: a trainer wants one split
            raise ValueError(f"{argument} must be one dataset split; got splits {sorted(columns)}")
        if columns is None or column not in columns:
            if args.needs_groups() and columns is not None:
                raise ValueError(
                    f"this objective needs a {column!r} column (group_column) in {argument}; "
                    f"its columns are {columns}"
                )
            return cls()
        feature = getattr(dataset, "features", {}).get(column)
        if hasattr(feature, "names"):  # a datasets.ClassLabel: ids with their names
            return cls(tuple(feature.names))
        values = dataset.unique(column)
        if all(isinstance(v, int) for v in values):
            if min(values) < 0:
                raise ValueError(f"integer group ids in {column!r} must be >= 0; got {min(values)}")
            return cls(tuple(str(i) for i in range(max(values) + 1)))
        if not all(isinstance(v, str) for v in values):
            raise ValueError(
                f"column {column!r} must hold integer ids or names (strings); got {values[:5]}"
            )
        names = tuple(sorted(values))
        return cls(names, {name: i for i, name in enumerate(names)})


class RobustSaveMixin:
    """Writes the config's robust settings (and the group names) beside the model TRL saves."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = output_dir or self.args.output_dir
            settings = {**self.args.robust_settings(), "group_names": list(self.groups.names)}
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, SETTINGS_FILE), "w") as f:
                json.dump(settings, f, indent=2)
