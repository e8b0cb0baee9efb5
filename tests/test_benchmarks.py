"""The profiling benchmark's parsers (benchmarks/profile_step.py): oneDNN verbose lines and profiler traces."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.profile_step import by_type, op_seconds, parse_onednn_verbose, short_op_name

VERBOSE = """\
onednn_verbose,v1,info,oneDNN v3.7.1 (commit 8d263e6)
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic32oc32_ih128oh128kh3sh1dh0ph1_iw128ow128kw3sw1dw0pw1,0.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic32oc32_ih128oh128kh3sh1dh0ph1_iw128ow128kw3sw1dw0pw1,53.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb16_ic64oc32_ih128oh128kh3sh1dh0ph1_iw128ow128kw3sw1dw0pw1,6.5
dnnl_verbose,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 dst:f32::blocked:Acdb32a::f0,,,32x3x3x3,0.25
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,truncated
some other output, exec, 1.0
"""


def test_onednn_verbose_sums_exec_lines_per_kernel():
    totals = parse_onednn_verbose(VERBOSE)
    assert totals == {
        "convolution jit:avx2 backward_weights": {"ms": 60.0, "count": 2},  # the create line is not an execution
        "reorder jit:uni undef": {"ms": 0.25, "count": 1},  # the older format without "v1,primitive"
    }


def test_short_op_name_keeps_layer_and_pass():
    assert short_op_name("StatefulPartitionedCall/gradient_tape/augmented_trainer_1/unet_1/dec1_conv1_1/"
                         "convolution/Conv2DBackpropFilter:_MklNativeConv2DBackpropFilter") == \
        "backward dec1_conv1_1/convolution/Conv2DBackpropFilter"
    assert short_op_name("StatefulPartitionedCall/augmented_trainer_1/unet_1/enc1_conv1_1/convolution:_MklNativeConv2D") \
        == "forward unet_1/enc1_conv1_1/convolution"


def test_op_seconds_reads_a_real_trace(tmp_path):
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 32, 32, 8)), tf.float32)
    kernel = tf.constant(np.random.default_rng(1).normal(size=(3, 3, 8, 8)), tf.float32)
    convolve = tf.function(lambda: tf.reduce_sum(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))))
    convolve()  # trace outside the profile
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(3):
        convolve().numpy()
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(tmp_path, "**", "*.xplane.pb"), recursive=True)
    assert len(paths) == 1
    seconds = op_seconds(paths[0])
    assert all(":" in name and "::" not in name for name in seconds)
    types = by_type(seconds)
    conv_types = [t for t in types if "Conv2D" in t]  # _MklNativeConv2D with oneDNN, Conv2D without
    assert conv_types, f"no convolution among the traced op types {sorted(types)}"
    assert all(value > 0 for value in types.values())
    assert sum(types.values()) == pytest.approx(sum(seconds.values()))


def test_conv_kernels_times_each_pass_of_tensorflow():
    from benchmarks.conv_kernels import PASSES, tensorflow_passes

    times = tensorflow_passes(channels=8, size=16, batch=2, repeats=1)
    assert set(times) == set(PASSES)
    assert all(value > 0 for value in times.values())
