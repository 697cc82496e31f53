"""A user's own functional Keras classifier, importable as "_user_model:build" in tests.

Two conv blocks with a residual connection inside the second, global pooling and a Dense softmax
classifier: "block2_out" is a valid split point, "block2_conv1" is not (the residual crosses it).
"""

import keras
from keras import layers


def build(num_classes=10, input_shape=(16, 16, 3)):
    images = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(8, 3, padding="same", name="block1_conv")(images)
    x = layers.BatchNormalization(name="block1_bn")(x)
    x = layers.ReLU(name="block1_out")(x)
    y = layers.Conv2D(8, 3, padding="same", name="block2_conv1")(x)
    y = layers.ReLU(name="block2_relu")(y)
    y = layers.Conv2D(8, 3, padding="same", name="block2_conv2")(y)
    x = layers.Add(name="block2_add")([x, y])
    x = layers.ReLU(name="block2_out")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="block3_conv")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(images, outputs, name="user_net")
