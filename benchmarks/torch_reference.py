"""The authors' CIFAR ResNet-32 models and OKDDip loss in PyTorch, for side-by-side speed checks.

Written from the architecture facts of the OKDDip code (branch-based "GL" ResNet-32: a shared
conv1 + layer1 + layer2, per-branch layer3 + Linear, W_L/W_E = Linear(64, 8, bias=False) over the
auxiliary peers' pooled features, attention-mixed peer logits) and its loss (CE of every branch,
plus KL at T = 3 of each peer toward its mixed target and of the leader toward the peers' mean
logits, T^2 and batchmean, +1e-7 on the target probabilities, nothing detached). Only used by the
benchmarks; needs the `bench` extra (torch).
"""

import torch
import torch.nn.functional as F
from torch import nn

GL_RESNET32_PARAMS_C100 = 1_554_272  # 4 branches, 100 classes
RESNET32_PARAMS_C100 = 472_756


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + identity or 1x1 conv-BN shortcut, then ReLU."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def make_layer(inplanes, planes, blocks, stride):
    return nn.Sequential(BasicBlock(inplanes, planes, stride),
                         *[BasicBlock(planes, planes) for _ in range(blocks - 1)])


def init_weights(model):
    """The authors' init: Kaiming-normal fan-out convs, BN 1/0; Linear layers keep PyTorch's."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ResNet32(nn.Module):
    """One CIFAR ResNet-32 (16/32/64 channels, 5 blocks per stage)."""

    def __init__(self, num_classes=100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = make_layer(16, 16, 5, 1)
        self.layer2 = make_layer(16, 32, 5, 2)
        self.layer3 = make_layer(32, 64, 5, 2)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layer3(x), 1), 1))


class GroupResNet32(nn.Module):
    """The branch-based OKDDip group: branches 0..m-2 are the auxiliary peers, m-1 the leader.

    forward returns (peer logits B x C x P, attention-mixed peer logits B x C x P, leader logits).
    """

    def __init__(self, num_classes=100, num_branches=4, feature_dim=64, factor=8):
        super().__init__()
        self.num_branches = num_branches
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = make_layer(16, 16, 5, 1)
        self.layer2 = make_layer(16, 32, 5, 2)
        self.layer3 = nn.ModuleList(make_layer(32, 64, 5, 2) for _ in range(num_branches))
        self.classifier3 = nn.ModuleList(nn.Linear(64, num_classes) for _ in range(num_branches))
        self.query_weight = nn.Linear(feature_dim, feature_dim // factor, bias=False)
        self.key_weight = nn.Linear(feature_dim, feature_dim // factor, bias=False)
        init_weights(self)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        features, logits = [], []
        for layer3, classifier in zip(self.layer3, self.classifier3):
            feature = torch.flatten(F.adaptive_avg_pool2d(layer3(x), 1), 1)
            features.append(feature)
            logits.append(classifier(feature))
        peers = self.num_branches - 1
        peer_features = torch.stack(features[:peers], dim=1)  # B x P x 64
        query = self.query_weight(peer_features)  # B x P x 8
        key = self.key_weight(peer_features)
        attention = F.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1)  # B x P x P
        peer_logits = torch.stack(logits[:peers], dim=-1)  # B x C x P
        mixed = torch.bmm(peer_logits, attention.transpose(1, 2))  # [:, :, a] = sum_b a_ab z_b
        return peer_logits, mixed, logits[-1]


def kl_t(target_logits, student_logits, temperature=3.0):
    """T^2 * KL(softmax(t/T) + 1e-7 || softmax(s/T)), summed over classes, mean over the batch."""
    target = F.softmax(target_logits / temperature, dim=1) + 1e-7
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, target, reduction="batchmean")


def okddip_loss(outputs, labels, distill_weight=1.0, temperature=3.0):
    """sum of CE over all branches + w * (sum_a KL_T(x_a || z_a) + KL_T(mean_a z_a || z_m))."""
    peer_logits, mixed, leader = outputs
    peers = peer_logits.shape[-1]
    ce = sum(F.cross_entropy(peer_logits[:, :, a], labels) for a in range(peers))
    ce = ce + F.cross_entropy(leader, labels)
    kl = sum(kl_t(mixed[:, :, a], peer_logits[:, :, a], temperature) for a in range(peers))
    kl = kl + kl_t(peer_logits.mean(dim=-1), leader, temperature)
    return ce + distill_weight * kl


def parameter_count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build(variant, num_classes=100, batch_size=128, seed=0):
    """(model, step() -> loss as a float) for "okddip_branch_4" or "single", with the paper's SGD.

    The batch is a fixed random one, already normalised float32 NCHW as the authors' loader
    hands it over.
    """
    torch.manual_seed(seed)
    if variant == "okddip_branch_4":
        model, expected, loss_fn = GroupResNet32(num_classes), GL_RESNET32_PARAMS_C100, okddip_loss
    elif variant == "single":
        model, expected, loss_fn = ResNet32(num_classes), RESNET32_PARAMS_C100, F.cross_entropy
    else:
        raise ValueError(f"Unknown variant {variant!r}; choose okddip_branch_4 or single.")
    if num_classes == 100:
        count = parameter_count(model)
        assert count == expected, f"{variant}: {count} parameters, the authors' model has {expected}"
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return model, step
