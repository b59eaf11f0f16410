"""Where teacher outputs come from: a live model (`live`) or outputs recorded once and replayed (`cache`)."""
from kdforge.teachers.base import TeacherOutput, TeacherSource
from kdforge.errors import CacheError
from kdforge.teachers.cache import CachedTeacher, TeacherCache
from kdforge.teachers.live import LiveTeacher

__all__ = ["CacheError", "CachedTeacher", "LiveTeacher", "TeacherCache", "TeacherOutput", "TeacherSource"]
