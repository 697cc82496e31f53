"""Sends images to the leader served by TF Serving and prints its predictions.

REST (only NumPy and, for image files, Pillow are needed):
    python export/client.py --server=http://localhost:8501 cat.png dog.jpg
    python export/client.py --server=http://localhost:8501 --cifar_test=500   # needs tfds data
gRPC (pip install tensorflow-serving-api; it requires the full `tensorflow` package):
    python export/client.py --grpc=localhost:8500 cat.png

Images are sent as raw uint8 pixels to the `serving_uint8` signature (`serving_default` takes
float32 pixels in [0, 255]). They must have the trained size (32x32 for CIFAR); pass
--resize=32,32 to resize others. The server answers a wrong size with
"Expected images of shape [batch, 32, 32, 3] ...".
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

import numpy as np


def load_image_files(paths, resize=None):
    """[N, H, W, 3] uint8 RGB pixels of image files (PNG, JPEG, ...); all of one size."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    images = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if resize:
                image = image.resize((resize[1], resize[0]), Image.BILINEAR)
            images.append(np.asarray(image, dtype=np.uint8))
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise ValueError(f"The images have different sizes {sorted(sizes)}; pass --resize=H,W "
                         "(the model's trained size, e.g. 32,32).")
    return np.stack(images)


def load_cifar_test(count, data_dir=None, name="cifar100"):
    """The first `count` test images and labels of a prepared tfds dataset (never downloads)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    dataset = tfds.load(name, split=f"test[:{count}]", as_supervised=True, batch_size=-1,
                        data_dir=data_dir, download=False)
    images, labels = tfds.as_numpy(dataset)
    return images, labels


def rest_predict(server, model_name, signature, images, timeout=60.0):
    """POST /v1/models/<model_name>:predict with the row ("instances") format.

    Returns a dict of NumPy arrays, one per output (logits, probabilities, class_ids,
    class_names). Server errors are raised as RuntimeError with the server's message.
    """
    body = json.dumps({"signature_name": signature, "instances": images.tolist()}).encode()
    request = urllib.request.Request(
        f"{server.rstrip('/')}/v1/models/{model_name}:predict", data=body,
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            predictions = json.load(response)["predictions"]
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace")
        try:
            message = json.loads(message)["error"]
        except (ValueError, KeyError):
            pass
        raise RuntimeError(f"TF Serving answered {error.code}: {message}") from None
    return {key: np.asarray([row[key] for row in predictions]) for key in predictions[0]}


def grpc_predict(target, model_name, signature, images, timeout=60.0):
    """The same request over gRPC (PredictionService/Predict); needs tensorflow-serving-api
    (`pip install -e ".[serving]"`). Server errors are raised as RuntimeError."""
    import grpc  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=C0415

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    dtype = tf.uint8 if signature == "serving_uint8" else tf.float32
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=dtype))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise RuntimeError(f"TF Serving answered {error.code().name}: "
                               f"{error.details()}") from None
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def describe(outputs, index, top_k):
    """"name (p=0.87), other (p=0.05), ..." for one image."""
    probabilities = outputs["probabilities"][index]
    names = outputs["class_names"][index]
    best = np.argsort(-probabilities)[:top_k]
    top = outputs["class_ids"][index]
    label = names.decode() if isinstance(names, bytes) else str(names)
    rest = ", ".join(f"class {i} (p={probabilities[i]:.3f})" for i in best if i != top)
    return f"{label} (class {top}, p={probabilities[top]:.3f})" + (f"; then {rest}" if rest else "")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--server", default="http://localhost:8501", help="REST address")
    target.add_argument("--grpc", help="gRPC address host:port (needs tensorflow-serving-api)")
    parser.add_argument("--model_name", default="leader")
    parser.add_argument("--signature", default="serving_uint8",
                        choices=("serving_uint8", "serving_default"))
    parser.add_argument("--cifar_test", type=int, default=0,
                        help="also send the first N CIFAR test images and report accuracy")
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default $TFDS_DATA_DIR)")
    parser.add_argument("--dataset", default="cifar100", help="tfds name for --cifar_test")
    parser.add_argument("--resize", default=None, help="H,W to resize image files to")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--top_k", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.images and not args.cifar_test:
        parser.error("give image files and/or --cifar_test=N")
    return args


def main(argv=None):
    args = parse_args(argv)
    resize = tuple(int(v) for v in args.resize.split(",")) if args.resize else None

    def predict(images):
        parts = []
        for start in range(0, len(images), args.batch_size):
            batch = images[start:start + args.batch_size]
            if args.signature == "serving_default":
                batch = batch.astype(np.float32)
            if args.grpc:
                parts.append(grpc_predict(args.grpc, args.model_name, args.signature, batch))
            else:
                parts.append(rest_predict(args.server, args.model_name, args.signature, batch))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    if args.images:
        outputs = predict(load_image_files(args.images, resize))
        for index, path in enumerate(args.images):
            print(f"{path}: {describe(outputs, index, args.top_k)}")
    if args.cifar_test:
        images, labels = load_cifar_test(args.cifar_test, args.data_dir, args.dataset)
        outputs = predict(images)
        accuracy = float(np.mean(outputs["class_ids"] == labels))
        print(f"{args.dataset} test[:{len(labels)}]: top-1 accuracy {accuracy:.4f}")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as error:
        sys.exit(f"client: {error}")
