"""Where teacher outputs come from: a live model now; a cache of recorded outputs plugs in behind the same call."""
from kdforge.teachers.live import LiveTeacher, TeacherSource

__all__ = ["LiveTeacher", "TeacherSource"]
