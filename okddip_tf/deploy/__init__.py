"""The deploy side: what `okddip export` makes of a trained group, and how it is checked.

    export       export_workdir / export_leader: the version directory, written atomically
    savedmodel   the leader as a TF Serving SavedModel (signatures, class-name asset)
    tflite       float32, float16 and int8 .tflite conversion, and a runner for the files
    calibration  percentile activation ranges for the full-integer int8 file
    interpreter  the interpreter the .tflite files run on (LiteRT; TensorFlow's as a fallback)
    parity       how each artefact compares with the Keras leader, for the export report

Nothing is imported here: the modules need TensorFlow, and training does not.
"""
