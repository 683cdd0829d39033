"""Import before torchvision (USB and LAMDA-SSL venvs): the registry's torchvision 0.28.0 ships compiled
operators (nms, roi_align, ...) that do not load against torch 2.13.0+cpu, and its import registers fake
and autograd kernels for them, which then fails. Neither toolkit uses those operators here (only image
transforms), so the two registration modules are replaced by empty ones."""
import sys
import types

for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(name, types.ModuleType(name))
