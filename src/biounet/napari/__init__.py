"""biounet's napari plugin: Segment and Train / fine-tune widgets, sample images and a reader of biounet's
prediction outputs. The manifest is ``napari.yaml`` beside this file; napari imports the modules it names
only when they are used."""
