//! ImageNet-1k class labels (the torchvision list, in class-index order).

const LABELS: &str = include_str!("imagenet_classes.txt");

/// The label of class `index` (0–999); `"?"` outside that range.
pub fn label(index: usize) -> &'static str {
    LABELS.lines().nth(index).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_complete() {
        // ImageNet-1k: 1000 classes.
        assert_eq!(super::LABELS.lines().count(), 1000);
        assert_eq!(super::label(281), "tabby");
        assert_eq!(super::label(5000), "?");
    }
}
