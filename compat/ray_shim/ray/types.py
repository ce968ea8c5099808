"""ray.types: ObjectRef (tasuki's), subscriptable as in Ray (`ObjectRef[np.ndarray]`) for annotations."""
import tasuki

ObjectRef = tasuki.ObjectRef
if not hasattr(ObjectRef, "__class_getitem__"):
    ObjectRef.__class_getitem__ = classmethod(lambda cls, item: cls)
