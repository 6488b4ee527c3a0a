"""Named layers of the seed networks, the one table the benchmarks draw from
(benchmarks/test_bench_*.py, compare.py and ``fastconv bench`` via fastconv.bench).

Each conv entry is (name, N, C, H, W, K, R, S, stride, pad, groups); GEMM sizes are
square M = N = K.
"""

# AlexNet is the original 227x227 network, with groups=2 on conv2/4/5.
CONV_LAYERS = [
    ("alexnet.conv1", 1, 3, 227, 227, 96, 11, 11, 4, 0, 1),
    ("alexnet.conv2", 1, 96, 27, 27, 256, 5, 5, 1, 2, 2),
    ("alexnet.conv3", 1, 256, 13, 13, 384, 3, 3, 1, 1, 1),
    ("alexnet.conv4", 1, 384, 13, 13, 384, 3, 3, 1, 1, 2),
    ("alexnet.conv5", 1, 384, 13, 13, 256, 3, 3, 1, 1, 2),
    ("zfnet.conv1", 1, 3, 224, 224, 96, 7, 7, 2, 1, 1),
    # VGG16: the second conv of each of the five blocks.
    ("vgg16.conv1_2", 1, 64, 224, 224, 64, 3, 3, 1, 1, 1),
    ("vgg16.conv2_2", 1, 128, 112, 112, 128, 3, 3, 1, 1, 1),
    ("vgg16.conv3_2", 1, 256, 56, 56, 256, 3, 3, 1, 1, 1),
    ("vgg16.conv4_2", 1, 512, 28, 28, 512, 3, 3, 1, 1, 1),
    ("vgg16.conv5_2", 1, 512, 14, 14, 512, 3, 3, 1, 1, 1),
    # GoogLeNet inception 3a (input 192x28x28): the 1x1 branch and the reduce -> 3x3 and
    # reduce -> 5x5 branches' convs.
    ("googlenet.3a.1x1", 1, 192, 28, 28, 64, 1, 1, 1, 0, 1),
    ("googlenet.3a.3x3_reduce", 1, 192, 28, 28, 96, 1, 1, 1, 0, 1),
    ("googlenet.3a.3x3", 1, 96, 28, 28, 128, 3, 3, 1, 1, 1),
    ("googlenet.3a.5x5", 1, 16, 28, 28, 32, 5, 5, 1, 2, 1),
    ("resnet50.res2_1x1a", 1, 64, 56, 56, 64, 1, 1, 1, 0, 1),
    ("resnet50.res2_1x1c", 1, 64, 56, 56, 256, 1, 1, 1, 0, 1),
    ("resnet50.res3_1x1a", 1, 512, 28, 28, 128, 1, 1, 1, 0, 1),
    ("resnet50.res4_1x1c", 1, 256, 14, 14, 1024, 1, 1, 1, 0, 1),
    ("resnet50.res5_1x1a", 1, 2048, 7, 7, 512, 1, 1, 1, 0, 1),
    ("resnet50.res2_3x3", 1, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("resnet50.res4_3x3", 1, 256, 14, 14, 256, 3, 3, 1, 1, 1),
    ("lenet5.conv1.b1", 1, 1, 32, 32, 6, 5, 5, 1, 0, 1),
    ("lenet5.conv2.b1", 1, 6, 14, 14, 16, 5, 5, 1, 0, 1),
    ("lenet5.conv1.b64", 64, 1, 32, 32, 6, 5, 5, 1, 0, 1),
    ("lenet5.conv2.b64", 64, 6, 14, 14, 16, 5, 5, 1, 0, 1),
]

GEMM_SIZES = [256, 1024, 2048]

# Fully connected layers at batch 1 (GEMV, memory bound): (name, in_features, out_features).
FC_LAYERS = [
    ("alexnet_fc6", 9216, 4096),
    ("alexnet_fc7", 4096, 4096),
    ("alexnet_fc8", 4096, 1000),
    ("vgg16_fc6", 25088, 4096),
]


def conv_flops(N, C, H, W, K, R, S, stride, pad, groups):
    """2 * MACs of the layer (bias and activation not counted)."""
    P = (H + 2 * pad - R) // stride + 1
    Q = (W + 2 * pad - S) // stride + 1
    return 2 * N * K * P * Q * (C // groups) * R * S


# Memory-bound ops on seed-network activations (batch 8): (name, op, input shape, kwargs).
MEMORY_OPS = [
    ("alexnet.relu1", "relu", (8, 96, 55, 55), {}),
    ("alexnet.pool1 3x3/2", "max_pool2d", (8, 96, 55, 55), {"kernel_size": 3, "stride": 2}),
    ("alexnet.norm1 LRN5", "local_response_norm", (8, 96, 55, 55), {"size": 5}),
    ("googlenet.pool 3x3/1 avg", "avg_pool2d", (8, 192, 28, 28),
     {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("vgg16.pool 2x2/2", "max_pool2d", (8, 64, 224, 224), {"kernel_size": 2}),
    ("resnet50.bn 256x56x56", "batch_norm", (8, 256, 56, 56), {}),
    ("resnet50.gap 2048x7x7", "global_avg_pool2d", (8, 2048, 7, 7), {}),
    ("softmax 64x1000", "softmax", (64, 1000), {"axis": 1}),
]
