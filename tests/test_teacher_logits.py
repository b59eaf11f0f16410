"""Teacher val/test logits: computed once per teacher and split, kept on disk keyed by weights and inputs."""
import torch
from torch import nn

from kdforge.data.types import Split
from kdforge.teachers.logits import TeacherLogits


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def test_once_in_memory_then_from_disk_and_never_stale(tmp_path):
    torch.manual_seed(0)
    teacher, split = Counting(), Split(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    first = TeacherLogits(tmp_path).get("t", teacher, split, 4, torch.device("cpu"))
    TeacherLogits(tmp_path).get("t", teacher, split, 4, torch.device("cpu"))  # another process: read from disk
    assert teacher.calls == 3  # 10 samples in batches of 4, once
    again = TeacherLogits(tmp_path)
    assert torch.equal(again.get("t", teacher, split, 4, torch.device("cpu")), first) and teacher.calls == 3
    with torch.no_grad():
        teacher.lin.weight.add_(1.0)  # a retrained teacher: new key, recomputed
    TeacherLogits(tmp_path).get("t", teacher, split, 4, torch.device("cpu"))
    assert teacher.calls == 6
    other = Split(split.x + 1, split.y)  # other data: recomputed
    TeacherLogits(tmp_path).get("t", teacher, other, 4, torch.device("cpu"))
    assert teacher.calls == 9


def test_a_damaged_cache_file_is_recomputed(tmp_path):
    teacher, split = Counting(), Split(torch.randn(6, 4), None)
    expected = TeacherLogits(tmp_path).get("t", teacher, split, 8, torch.device("cpu"))
    (cached,) = tmp_path.glob("*.safetensors")
    data = bytearray(cached.read_bytes())
    data[-4] ^= 0xFF
    cached.write_bytes(bytes(data))
    assert torch.equal(TeacherLogits(tmp_path).get("t", teacher, split, 8, torch.device("cpu")), expected)
    assert teacher.calls == 2
