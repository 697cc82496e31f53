"""Exports the deployable leader: a TF Serving SavedModel, TFLite files and a parity report.

`export_workdir(workdir)` (what `okddip export` runs) writes one version directory:

    <export_dir>/<model_name>/<version>/
        saved_model.pb, fingerprint.pb, variables/   the SavedModel TF Serving loads
        assets/class_names.txt                        one label per line, line i = class i
        <model_name>_<format>.tflite                  float32, float16, dynamic_int8, int8
        export_report.json                            sizes, parameters, parity and accuracy

TF Serving watches `<export_dir>/<model_name>`, serves the highest integer version and reads only
the SavedModel's files of it. A version is built in a hidden sibling directory and renamed into
place, so a crash never leaves a half-written one. Signatures: see `okddip_tf.deploy.savedmodel`.
"""

import os
import shutil
import tempfile

import keras
import numpy as np

from okddip_tf import atomic_files, inputs, models, progress, quiet
from okddip_tf.rundir import LAST_CHECKPOINT
from okddip_tf.deploy import calibration, parity, savedmodel, tflite
from okddip_tf.errors import ExistsError, InputError, MissingInputError, UsageError, UserError
from okddip_tf.group import GroupModel

SAVED_MODEL = "saved_model"
FORMATS = (SAVED_MODEL,) + tuple(tflite.FORMATS)
REPORT_NAME = "export_report.json"
BATCH = 256


def export_leader(group_or_leader, export_dir, *, model_name="leader", version=None,
                  overwrite=False, class_names=None, representative_images=None,
                  eval_images=None, eval_labels=None, formats=None, image_shape=None,
                  source=None, int8_calibration="percentile"):
    """Writes `<export_dir>/<model_name>/<version>/` and returns its report (a dict).

    Args:
      group_or_leader: a `GroupModel` (its leader is exported and checked to hold exactly one
        student network's parameters) or a leader `keras.Model` (raw inputs -> logits). Its
        input (images, token ids, features, ...; see `okddip_tf.inputs`) is what the
        signatures take, named and typed after it.
      export_dir: the export root; TF Serving's model base path is `<export_dir>/<model_name>`.
      model_name: the TF Serving model name.
      version: the integer version; None writes the next one (latest + 1, or 1).
      overwrite: replace `version` (None: the latest version) if it exists.
      class_names: one label per class (None: the class ids as strings).
      representative_images: raw training inputs of the leader's kind (images [N, H, W, 3],
        token ids [N, T], features [N, F]) to calibrate the int8 file.
      eval_images, eval_labels: raw test inputs (and labels) for parity and accuracy; without
        them parity is measured on the representative (or 64 random) inputs.
      formats: subset of `FORMATS` (None: all, less "int8" without representative images).
      image_shape: (H, W, 3) when an image model's input leaves them undefined.
      source: a dict recorded in the report (where the model came from).
      int8_calibration: "percentile" (default) or "minmax": how the int8 file's activation
        ranges are set (see okddip_tf/deploy/calibration.py).
    """
    leader, spec, num_classes, single_network = resolve_leader(group_or_leader, image_shape)
    formats = resolve_formats(formats, representative_images)
    calibration.check_method(int8_calibration)
    class_names = check_class_names(class_names, num_classes)
    model_dir = os.path.join(export_dir, model_name)
    version = resolve_version(model_dir, version, overwrite)
    probe, labels, probe_name = parity.pick_probe(eval_images, eval_labels,
                                                  representative_images, spec)
    reference = leader.predict(as_leader_input(probe, spec), batch_size=BATCH, verbose=0)
    check_finite_outputs(leader, spec, reference, probe_name, representative_images, model_dir)
    report = {
        "model_name": model_name, "version": version,
        **({"image_shape": list(spec.shape)} if spec.is_image else {}),
        "input": spec.get_config(),
        "num_classes": num_classes, "class_names_asset": f"assets/{savedmodel.CLASS_NAMES_ASSET}",
        "signatures": {name: f"{spec.name} {dtype.name} [batch, {', '.join(map(str, spec.shape))}]"
                       for name, dtype in savedmodel.signatures(spec).items()},
        "parameters": {"leader": leader.count_params(), "single_network": single_network},
        "evaluation": {"images": probe_name, "count": len(probe),
                       "keras_accuracy": parity.accuracy(reference, labels)},
        "source": source or {}, "artefacts": {},
    }

    def build(directory):
        write_artefacts(directory, leader, class_names, formats, representative_images,
                        (probe, reference, labels), report, int8_calibration)

    path = os.path.join(model_dir, str(version))
    write_version(build, path, overwrite)
    return {**report, "directory": path}


def write_artefacts(directory, leader, class_names, formats, representative_images, probe,
                    report, int8_calibration):
    """The SavedModel, the TFLite files and the report, each checked against the Keras leader."""
    spec, parameters = inputs.spec_from(report["input"]), report["parameters"]["leader"]
    with progress.step("Writing the SavedModel"):
        savedmodel.write_saved_model(leader, spec, class_names, directory)
    outputs = savedmodel.predict(directory, probe[0], batch_size=BATCH)
    saved_parameters = savedmodel.count_parameters(directory)
    if saved_parameters != parameters:
        raise RuntimeError(f"The SavedModel holds {saved_parameters} parameters, the leader "
                           f"{parameters}: it must hold exactly the leader's weights.")
    report["artefacts"][SAVED_MODEL] = {
        "path": ".", "description": "TF Serving SavedModel (its files only)",
        "size_bytes": savedmodel.size_bytes(directory), "parameters": saved_parameters,
        **parity.compare(outputs, *probe[1:])}
    with tempfile.TemporaryDirectory() as scratch:
        converted = formats[1:] and tflite.write_conversion_model(leader, spec, scratch)
        for fmt in formats[1:]:
            path = os.path.join(directory, f"{report['model_name']}_{fmt}.tflite")
            with progress.step(conversion_message(fmt, representative_images, int8_calibration,
                                                  spec)):
                with open(path, "wb") as f, quiet.notices_dropped():
                    f.write(tflite.convert(converted, fmt, representative_images,
                                           int8_calibration=int8_calibration))
            with quiet.notices_dropped():
                classifier = tflite.TFLiteClassifier(path)
                logits = classifier.predict(probe[0], BATCH)
            output_step = classifier.output_details["logits"]["quantization"][0] or None
            report["artefacts"][fmt] = {
                "path": os.path.basename(path), "description": tflite.FORMATS[fmt],
                "size_bytes": os.path.getsize(path), "parameters": parameters,
                "input_dtype": classifier.input_dtype.name,
                **parity.compare(logits, *probe[1:], output_step=output_step)}
            if fmt == "int8":
                check_int8_smaller(report["artefacts"], parameters)
            if fmt in tflite.NEEDS_REPRESENTATIVE_IMAGES:
                report["artefacts"][fmt]["calibration"] = {
                    "images" if spec.is_image else "inputs": len(representative_images),
                    "method": int8_calibration,
                    "percentile": (calibration.DEFAULT_PERCENTILE
                                   if int8_calibration == "percentile" else None)}
    report_path = os.path.join(directory, REPORT_NAME)
    atomic_files.write_json(report_path, report)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)  # a server running as another user must read it
    os.chmod(report_path, 0o666 & ~umask)


def as_leader_input(values, spec):
    """NumPy inputs as the Keras leader takes them: float32, or int32 token ids."""
    return np.asarray(values).astype(savedmodel.tensor_dtype(spec))


def check_finite_outputs(leader, spec, reference, probe_name, representative_images, model_dir):
    """Refuses (before anything is written) a leader whose logits are NaN or infinite on the
    parity inputs or the int8 calibration inputs: a diverged model is not an export."""
    checked = [(probe_name, reference)]
    if representative_images is not None and len(representative_images) \
            and not probe_name.startswith("representative"):
        checked.append(("representative (training) inputs", leader.predict(
            as_leader_input(representative_images, spec), batch_size=BATCH, verbose=0)))
    for name, logits in checked:
        bad_rows = ~np.isfinite(logits).all(axis=-1)
        if bad_rows.any():
            raise InputError(
                f"The leader's logits are not finite (NaN or infinite) on {int(bad_rows.sum())} "
                f"of {len(logits)} {name}: it diverged or its weights are broken, so it is not "
                f"exported (nothing was written to {model_dir}); export an earlier checkpoint.")


def check_int8_smaller(artefacts, parameters):
    """An "int8" file at least as large as float32 (or 4 bytes a parameter) is not quantised."""
    float32 = artefacts.get("float32", {}).get("size_bytes") or 4 * parameters
    size = artefacts["int8"]["size_bytes"]
    if size >= float32:
        raise InputError(
            f"The int8 TFLite file ({size:,} bytes) is not smaller than the float32 one "
            f"({float32:,} bytes): the converter did not quantise the leader (its calibration "
            "outputs may be constant or not finite). Nothing was exported; export without "
            "int8 (formats=...) or check the representative images.")


def conversion_message(fmt, representative_images, int8_calibration, spec):
    if fmt not in tflite.NEEDS_REPRESENTATIVE_IMAGES or representative_images is None:
        return f"Converting to TFLite {fmt}"
    return (f"Converting to TFLite {fmt}: calibrating on {len(representative_images)} training "
            f"{'images' if spec.is_image else 'inputs'} ({int8_calibration} ranges), then "
            "quantizing; this takes tens of seconds")


def export_workdir(workdir=None, checkpoint=None, export_dir=None, *, model_name="leader",
                   version=None, overwrite=False, formats=None, eval_examples=None,
                   representative_examples=1000, int8_calibration="percentile", examples=None):
    """Exports the leader of a training run (what `okddip export` does); returns the report.

    Args:
      workdir: an `okddip train` workdir; its checkpoints/last.keras is exported, its
        dataset_info.json gives the class names and its config.json the data.
      checkpoint: a .keras group checkpoint (instead of, or overriding, the workdir's).
      export_dir: default `<workdir>/export` (without a workdir: beside the checkpoint).
      eval_examples: test images for the report's accuracy and parity: None uses the
        workdir's evaluation split as it was configured, 0 none (parity on training images).
      representative_examples: first training images used to calibrate the int8 file.
      examples: a `.npz` file of the leader's inputs (`inputs`: token ids [N, T], features
        [N, F], images, ...; optional `labels` [N]) used instead of the workdir's data (a
        group trained in Python has none): its first `representative_examples` inputs
        calibrate the int8 file, and parity and accuracy (with labels) are measured on its
        first `eval_examples` (None: all). Give held-out examples.
      model_name, version, overwrite, formats, int8_calibration: as in `export_leader`.
    """
    if workdir is None and checkpoint is None:
        raise UsageError("Pass a workdir (okddip export --workdir=DIR) or a checkpoint "
                         "(--checkpoint=PATH/last.keras).")
    if workdir is not None and not os.path.isdir(workdir):
        raise MissingInputError(f"Workdir {workdir} does not exist; pass the --workdir of an "
                                "`okddip train` run.")
    if checkpoint is None:
        checkpoint = os.path.join(workdir, "checkpoints", LAST_CHECKPOINT)
    elif workdir is None:  # <workdir>/checkpoints/last.keras
        parent = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
        workdir = parent if os.path.isfile(os.path.join(parent, "config.json")) else None
    with progress.step(f"Loading {checkpoint}"):
        group = load_group(checkpoint)
    config, info = (atomic_files.read_json(os.path.join(workdir, name)) if workdir else None
                    for name in ("config.json", "dataset_info.json"))
    representative = eval_images = eval_labels = None
    calibrate = formats is None or "int8" in formats
    if examples is not None:
        representative, eval_images, eval_labels = load_examples_file(
            examples, representative_examples if calibrate else 0, eval_examples)
    elif config is not None and (calibrate or eval_examples != 0):
        try:
            representative, eval_images, eval_labels = load_export_data(
                config["data"], representative_examples if calibrate else 0, eval_examples)
        except (OSError, ValueError) as error:
            kind = type(error) if isinstance(error, UserError) else next(
                k for k in (FileNotFoundError, ValueError, OSError) if isinstance(error, k))
            raise kind(f"{error} To export without data, pass --eval_examples=0 "
                       "--formats=saved_model,float32,float16,dynamic_int8.") from error
    source = {"checkpoint": os.path.abspath(checkpoint), "backbone": group.backbone_name,
              "method": group.method_name, "deployed": group.method.deployed,
              "num_students": group.num_students,
              "sharing": group.sharing, "dataset": (info or {}).get("name")}
    return export_leader(
        group, export_dir or os.path.join(workdir or os.path.dirname(checkpoint), "export"),
        model_name=model_name, version=version, overwrite=overwrite,
        class_names=(info or {}).get("class_names"), representative_images=representative,
        eval_images=eval_images, eval_labels=eval_labels, formats=formats, source=source,
        int8_calibration=int8_calibration)


def load_group(checkpoint):
    """Loads a .keras GroupModel checkpoint (no optimizer); clear errors for anything else."""
    if not os.path.isfile(checkpoint):
        raise MissingInputError(
            f"No checkpoint at {checkpoint}. `okddip train` writes <workdir>/checkpoints/"
            f"{LAST_CHECKPOINT} after every epoch: train first, or pass --checkpoint=PATH to a "
            ".keras file of a GroupModel.")
    try:
        model = keras.saving.load_model(checkpoint, compile=False)
    except Exception as error:  # zip, config or weight problems all land here
        raise InputError(f"Could not load {checkpoint} as a Keras model ({type(error).__name__}: "
                         f"{error}). Expected a .keras file of an okddip_tf GroupModel, as "
                         "written by `okddip train`.") from error
    if not isinstance(model, GroupModel):
        raise InputError(f"{checkpoint} holds a {type(model).__name__}, not an okddip_tf "
                         "GroupModel; `okddip export` exports the leader of a trained group "
                         "(<workdir>/checkpoints/last.keras).")
    return model


def resolve_leader(group_or_leader, image_shape):
    """(leader, its `InputSpec`, num_classes, parameters of one freshly built student network)."""
    single_network = None
    if isinstance(group_or_leader, GroupModel):
        group = group_or_leader
        leader, spec = group.leader, group.example_spec
        normalizer = group.normalizer
        reference = GroupModel(backbone=group.backbone, num_classes=group.num_classes,
                               num_students=1, method="baseline",
                               input_spec=group.example_spec,
                               **({"pixel_mean": normalizer.mean, "pixel_std": normalizer.std}
                                  if normalizer else {})).leader
        shapes = [[tuple(w.shape) for w in m.weights] for m in (leader, reference)]
        if shapes[0] != shapes[1]:
            raise RuntimeError("The leader's weights differ from one freshly built "
                               f"{group.backbone_name}: {shapes[0]} vs {shapes[1]}.")
        single_network = reference.count_params()
    elif isinstance(group_or_leader, keras.Model):
        leader = group_or_leader
        spec = models.keras_backbone.input_spec_of(leader)
    else:
        raise TypeError(f"Expected a GroupModel or a keras.Model, got {type(group_or_leader)}.")
    if image_shape and spec.is_image:
        spec = spec.with_shape(image_shape)
    if not spec.fully_defined:
        raise ValueError(f"The export needs a fixed input shape, got {spec.describe()}: pass "
                         "image_shape= (H, W, C), or build the group with image_shape= (or "
                         "input_spec=).")
    return leader, spec, int(leader.output_shape[-1]), single_network


def resolve_formats(formats, representative_images):
    """The formats to write, SavedModel first (always: the TFLite files are converted from it)."""
    if formats is None:
        has_images = representative_images is not None and len(representative_images) > 0
        formats = [f for f in FORMATS if has_images or f not in tflite.NEEDS_REPRESENTATIVE_IMAGES]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UsageError(f"Unknown export formats {unknown}; choose from {list(FORMATS)}.")
    return [SAVED_MODEL] + [f for f in FORMATS[1:] if f in formats]


def check_class_names(class_names, num_classes):
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes or any("\n" in n or "\r" in n for n in class_names):
        raise ValueError(f"Expected {num_classes} single-line class names, got "
                         f"{len(class_names)}.")
    return class_names


def resolve_version(model_dir, version, overwrite):
    """The version to write: next by default; an existing one only with `overwrite`."""
    versions = existing_versions(model_dir)
    if version is None:
        return max(versions) if overwrite and versions else max(versions, default=0) + 1
    if int(version) != version or version < 1:
        raise UsageError(f"Versions are positive integers (TF Serving's layout), got {version}.")
    if version in versions and not overwrite:
        raise ExistsError(f"{model_dir}/{version} exists; pass overwrite=True (--overwrite) "
                          f"to replace it, or omit the version to write {max(versions) + 1}.")
    return int(version)


def existing_versions(model_dir):
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


def write_version(build, path, overwrite):
    """`build(tmp)` in a hidden sibling, renamed to `path`; an existing `path` is swapped out."""
    if not os.path.exists(path):
        atomic_files.replace_directory(build, path)
        return
    if not overwrite:
        raise ExistsError(f"{path} exists; pass overwrite=True to replace it.")
    parent, name = os.path.split(path)
    staged = os.path.join(parent, f".staged-{name}-{os.getpid()}")
    old = os.path.join(parent, f".replaced-{name}-{os.getpid()}")
    atomic_files.replace_directory(build, staged)
    os.rename(path, old)
    os.rename(staged, path)
    shutil.rmtree(old, ignore_errors=True)


def load_examples_file(path, representative_examples, eval_examples):
    """(calibration inputs, parity inputs, their labels or None) from an `.npz` file holding
    `inputs` and optionally `labels` (see `export_workdir`)."""
    if not os.path.isfile(path):
        raise MissingInputError(f"No examples file at {path}; pass an .npz file holding "
                                "`inputs` (and optionally `labels`).")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = dict(arrays)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not read {path} as an .npz file ({error}); write it with "
                         "np.savez(path, inputs=..., labels=...).") from error
    if "inputs" not in found:
        raise InputError(f"{path} holds {sorted(found)}, no `inputs`; write it with "
                         "np.savez(path, inputs=..., labels=...).")
    values, labels = found["inputs"], found.get("labels")
    if labels is not None and labels.shape != (len(values),):
        raise InputError(f"{path}: `labels` has shape {labels.shape}; expected one label per "
                         f"input, shape ({len(values)},).")
    count = len(values) if eval_examples is None else eval_examples
    return (values[:representative_examples] if representative_examples else None,
            values[:count] if count else None,
            labels[:count] if count and labels is not None else None)


def load_export_data(data_config, representative_examples, eval_examples):
    """(first training images, test images, test labels) of a workdir's data config."""
    from okddip_tf import data  # pylint: disable=import-outside-toplevel

    config = dict(data_config)
    train_count = max(1, min(representative_examples, config["train_examples"] or 10**9))
    if eval_examples is None:
        eval_examples = config["eval_examples"]
    config.update(train_examples=train_count, batch_size=train_count, augment=False,
                  shuffle_buffer=train_count, cache=False, eval_batch_size=BATCH,
                  eval_examples=1 if eval_examples == 0 else eval_examples)
    train_ds, eval_ds, _ = data.load_datasets(**config, seed=0)
    representative = next(iter(train_ds))[0].numpy() if representative_examples else None
    if eval_examples == 0:
        return representative, None, None
    batches = [(x.numpy(), y.numpy()) for x, y in eval_ds]
    return (representative, np.concatenate([b[0] for b in batches]),
            np.concatenate([b[1] for b in batches]))
